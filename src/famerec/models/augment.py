"""Sequence augmentations and view helpers shared by the contrastive models (CL4SRec, DuoRec,
ICLRec).

CL4SRec's three augmentations (Xie et al., ICDE 2022), applied to a whole batch of
left-padded sequences at once (no Python loop over sequences), with randomness from torch's
global generator (which checkpoints save):

* `crop` (ratio eta): keep a random contiguous run of max(1, floor(eta * n)) items;
* `mask` (ratio gamma): replace floor(gamma * n) random items by a mask id (CL4SRec: a [mask]
  token; ICLRec: 0, i.e. padding);
* `reorder` (ratio beta): shuffle a random contiguous run of floor(beta * n) items.

n is a sequence's length, counted from its first item (a masked item inside a sequence still
counts). Every view keeps at least one real item and holds only ids of the sequence or the
mask id. The random choices are uniform: the start of the run, the masked items, the order.

The helpers: `ViewBatch` carries a batch with two views of each of its sequences from
`transform_batch` to `loss`; `batch_sequences` joins a batch's parts into one tensor;
`encode_by_length` encodes views grouped by length, each group only as wide as its longest
view (as the trainer's batches are), so that a cropped view costs as much as its items.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from famerec.data.batching import TrainBatch, length_classes
from famerec.errors import ConfigError

CROP, MASK, REORDER = 0, 1, 2  # augmentation ids, as CL4SRec lists them


@dataclass(frozen=True)
class ViewBatch:
    """A training batch with two views of each of its sequences (what `loss` contrasts)."""

    batch: TrainBatch
    first: torch.Tensor  # (B, W) left-padded item ids, in the order of `batch_sequences`
    second: torch.Tensor  # (B, W)
    last_targets: torch.Tensor  # (B,) the item after each view's sequence (DuoRec: its prefix)


def as_train_batch(batch: TrainBatch | tuple[torch.Tensor, torch.Tensor]) -> TrainBatch:
    """A TrainBatch of one part from (item_seq, targets), as `loss` also accepts."""
    if isinstance(batch, TrainBatch):
        return batch
    item_seq, targets = batch
    return TrainBatch(((item_seq, targets),), int((targets != 0).sum()))


def batch_sequences(batch: TrainBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """All sequences of a batch as one left-padded (B, W) tensor, parts one after the other,
    and their (B, W) targets (the last column: the item after each whole sequence)."""
    width = max(inputs.shape[1] for inputs, _ in batch.parts)
    padded = [
        (F.pad(inputs, (width - inputs.shape[1], 0)), F.pad(targets, (width - inputs.shape[1], 0)))
        for inputs, targets in batch.parts
    ]
    sequences, targets = zip(*padded)
    return torch.cat(sequences), torch.cat(targets)


def sequence_lengths(item_seq: torch.Tensor) -> torch.Tensor:
    """(B, L) left-padded ids -> (B,) positions from each row's first item to its end."""
    width = item_seq.shape[1]
    first = torch.where(item_seq != 0, torch.arange(width, device=item_seq.device), width)
    return width - first.min(dim=1).values


def _ratio_count(lengths: torch.Tensor, ratio: float) -> torch.Tensor:
    """floor(ratio * n) per row, in float64 as Python's math.floor(ratio * n) computes it."""
    return torch.floor(lengths.double() * ratio).long()


def uniform_below(high: torch.Tensor) -> torch.Tensor:
    """One uniform integer in [0, high) for each entry of `high` (0 where high is 0)."""
    uniform = torch.rand(high.shape, device=high.device, dtype=torch.float64)
    return torch.floor(uniform * high).long()


def crop(item_seq: torch.Tensor, ratio: float) -> torch.Tensor:
    """(B, L) -> (B, L): a random contiguous run of max(1, floor(ratio * n)) items, left-padded."""
    width = item_seq.shape[1]
    lengths = sequence_lengths(item_seq)  # (B,)
    keep = _ratio_count(lengths, ratio).clamp(min=1)  # (B,)
    start = uniform_below(lengths - keep + 1)  # (B,) first kept item, within the sequence
    columns = torch.arange(width, device=item_seq.device)  # (L,)
    # Output column q >= L - keep holds item start + q - (L - keep) of the sequence, which
    # starts at column L - n: column q + start + keep - n of the input.
    source = columns + (start + keep - lengths).unsqueeze(1)  # (B, L)
    kept = columns >= (width - keep).unsqueeze(1)  # (B, L)
    return torch.where(kept, item_seq.gather(1, source.clamp(0, width - 1)), 0)


def mask(item_seq: torch.Tensor, ratio: float, mask_id: int) -> torch.Tensor:
    """(B, L) -> (B, L): floor(ratio * n) distinct random items replaced by `mask_id`."""
    width = item_seq.shape[1]
    lengths = sequence_lengths(item_seq)
    count = _ratio_count(lengths, ratio)  # (B,) < n for ratio < 1
    in_sequence = torch.arange(width, device=item_seq.device) >= (width - lengths).unsqueeze(1)
    keys = torch.rand(item_seq.shape, device=item_seq.device).masked_fill(~in_sequence, 2.0)
    rank = keys.argsort(dim=1).argsort(dim=1)  # (B, L) random rank of each item, padding last
    return item_seq.masked_fill(rank < count.unsqueeze(1), mask_id)


def reorder(item_seq: torch.Tensor, ratio: float) -> torch.Tensor:
    """(B, L) -> (B, L): a random contiguous run of floor(ratio * n) items shuffled in place."""
    width = item_seq.shape[1]
    lengths = sequence_lengths(item_seq)
    size = _ratio_count(lengths, ratio)  # (B,)
    first = (width - lengths) + uniform_below(lengths - size + 1)  # (B,) window's first column
    columns = torch.arange(width, device=item_seq.device).double()  # (L,)
    inside = (columns >= first.unsqueeze(1)) & (columns < (first + size).unsqueeze(1))  # (B, L)
    # Sorting keys: a column keeps its own index outside the window; inside, a random key in
    # [first, first + size - 1) sends the window's items to a random order of its own columns.
    spread = (size - 1).clamp(min=0).unsqueeze(1)  # (B, 1)
    uniform = torch.rand(item_seq.shape, device=item_seq.device, dtype=torch.float64)
    random_keys = first.unsqueeze(1) + uniform * spread  # (B, L)
    keys = torch.where(inside, random_keys, columns.expand_as(random_keys))
    return item_seq.gather(1, keys.argsort(dim=1))


def augment(
    item_seq: torch.Tensor,
    choice: torch.Tensor,
    crop_ratio: float,
    mask_ratio: float,
    reorder_ratio: float,
    mask_id: int,
) -> torch.Tensor:
    """(B, L) -> (B, L): row b augmented by crop, mask or reorder as `choice[b]` (B,) says."""
    crops = crop(item_seq, crop_ratio)
    masks = mask(item_seq, mask_ratio, mask_id)
    reorders = reorder(item_seq, reorder_ratio)
    choice = choice.unsqueeze(1)
    return torch.where(choice == CROP, crops, torch.where(choice == MASK, masks, reorders))


def encode_by_length(
    encode: Callable[[torch.Tensor], torch.Tensor], item_seq: torch.Tensor
) -> torch.Tensor:
    """`encode` ((b, w) left-padded ids -> (b, k)) applied to the rows of `item_seq` (B, W)
    grouped by length class (1, 2, 3-4, 5-8, ...), each group cut to its longest row; the
    results (B, k) come back in row order."""
    lengths = sequence_lengths(item_seq)
    classes = length_classes(lengths)
    order = torch.argsort(classes, stable=True)
    counts = torch.bincount(classes)
    outputs = []
    for group in order.split(counts[counts > 0].tolist()):
        width = int(lengths[group].max())
        outputs.append(encode(item_seq[group, item_seq.shape[1] - width :]))
    encoded = torch.cat(outputs)
    result = torch.empty_like(encoded)
    result[order] = encoded
    return result


def check_augmentation_ratios(crop: float, mask: float, reorder: float) -> None:
    """The ratios of crop, mask and reorder (shared by CL4SRec and ICLRec)."""
    if not 0.0 < crop <= 1.0:
        raise ConfigError(f"--crop must be in (0, 1], got {crop}")
    if not 0.0 <= mask < 1.0:
        raise ConfigError(f"--mask must be in [0, 1), got {mask}")
    if not 0.0 <= reorder <= 1.0:
        raise ConfigError(f"--reorder must be in [0, 1], got {reorder}")


def check_contrastive_weights(temperature: float, **weights: float) -> None:
    """Loss weights are 0 or more and the temperature is positive."""
    for name, weight in weights.items():
        if weight < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be 0 or more, got {weight}")
    if temperature <= 0:
        raise ConfigError(f"--temperature must be positive, got {temperature}")
