import torch

from famerec.data.batching import TrainBatches, length_classes, prefix_batch
from tests.data.test_batching import random_tensors


def brute_force_prefixes(batch):
    """(prefix items, next item) of every real position, one sequence at a time."""
    pairs = []
    for inputs, targets in batch.parts:
        for items, nexts in zip(inputs.tolist(), targets.tolist()):
            for t, target in enumerate(nexts):
                if target:
                    pairs.append((tuple(i for i in items[: t + 1] if i), target))
    return sorted(pairs)


def test_every_real_position_becomes_one_left_padded_prefix():
    batches = TrainBatches(random_tensors(), batch_size=64, generator=torch.Generator())
    for batch in batches:
        prefixes = prefix_batch(batch)
        assert prefixes.positions == batch.positions == prefixes.num_sequences
        pairs = []
        for items, targets in prefixes.parts:
            lengths = (items != 0).sum(1)
            assert lengths.max() == items.shape[1]  # cut to the part's longest prefix
            assert len(set(length_classes(lengths).tolist())) == 1
            assert (items[:, -1] != 0).all() and (targets[:, :-1] == 0).all()
            for row, target in zip(items.tolist(), targets[:, -1].tolist()):
                real = [i for i in row if i]
                assert row == [0] * (len(row) - len(real)) + real  # left-padded
                pairs.append((tuple(real), target))
        assert sorted(pairs) == brute_force_prefixes(batch)
