"""CL4SRec: Contrastive Learning for Sequential Recommendation (Xie et al., ICDE 2022).

SASRec trained with its next-item loss plus a contrastive term (the paper's multi-task loss):

    L = L_next_item + lambda * L_cl

For every training sequence, two views are drawn with two of the paper's three augmentations
(crop with ratio eta, mask with ratio gamma, reorder with ratio beta; `famerec.models.augment`);
both pass the shared SASRec encoder, the output at a view's last position is its
representation, and NT-Xent (`losses.info_nce`) classifies each of the 2B views of a batch
against the other 2B - 1, its partner view being the positive.

The authors released no code. famerec follows the implementation in the DuoRec repository
(RuihongQiu/DuoRec: recbole/model/sequential_recommender/cl4srec.py and the `cl4srec_aug` of
recbole/data/dataloader/sequential_dataloader.py); SSLRec's cl4srec.py, which the FAME paper
ran for its CL4SRec row, does the same:
* the two views use two different augmentations (a random ordered pair of the three); a
  sequence of one item stays as it is (every augmentation leaves it unchanged here);
* eta = 0.6, gamma = 0.3, beta = 0.6; masked items become a [mask] token with its own
  embedding; lambda = 0.1, temperature 1.0, dot-product similarity.

Recipe (`RECIPE`; `--preset classic` trains without it, at a constant 1e-3 on batches of 256
for up to 200 epochs): Adam at a peak rate of 2e-3 on batches of 256, 100 warmup steps, cosine
decay to 0 over 150 epochs, and the contrastive term ramped in over the first 880 steps (ten
Beauty epochs; `--aux-warmup-steps`, after which the objective is the original's). Found here,
on Beauty's validation split only (benchmarks/RESULTS.md, "CL4SRec's recipe"): over three
seeds its best validation NDCG@10 is 0.0695 against the old recipe's 0.0688, its test NDCG@10
0.0546 against 0.0532 (paired p < 0.001); it reaches the target of 0.0685 at epochs 64-79
instead of 165-199, after about 20 minutes of one thread instead of 50-60, and a run takes 44
minutes instead of 61 (the same machine).
Without the ramp the term's gradient, 20 times the next-item loss's at the start, steers Adam's
first steps, and a decay over 25-90 epochs ends the climb below the old recipe's best
(0.0642 over 60 epochs, 0.0673 over 90).

Differences from that implementation, and why:
* famerec's SASRec (its block layout, ReLU, Xavier init, full-softmax cross-entropy at every
  position) is the encoder, so that CL4SRec differs from famerec's SASRec only by the
  contrastive term;
* the original trains every prefix of a sequence as a sample of its own and contrasts each
  prefix; famerec trains all prefixes of a training sequence in one row (as SASRec does) and
  contrasts the whole sequence once per epoch;
* the [mask] token is a vector of its own (`MaskToken`), not a row of the item embedding, so
  it can never be scored or recommended and a SASRec run's weights fit unchanged;
* crop keeps max(1, floor(eta * n)) items (the original falls back to the whole sequence when
  floor(eta * n) = 0, which with eta = 0.6 only happens for n = 1, where both agree).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from famerec.config import ModelConfig, TrainConfig, option
from famerec.data.batching import TrainBatch
from famerec.errors import ConfigError
from famerec.models.augment import (
    ViewBatch,
    as_train_batch,
    augment,
    batch_sequences,
    check_augmentation_ratios,
    check_contrastive_weights,
    encode_by_length,
)
from famerec.models.base import Losses, SequentialRecommender
from famerec.models.losses import info_nce
from famerec.models.registry import cosine_recipe, register
from famerec.models.sasrec import SASRec, SASRecOptions


@dataclass
class CL4SRecOptions(SASRecOptions):
    """CL4SRec's own settings (`--model cl4srec`)."""

    crop_ratio: float = option(0.6, "eta: share of a sequence that crop keeps", flag="--crop")
    mask_ratio: float = option(0.3, "gamma: share of a sequence's items masked", flag="--mask")
    reorder_ratio: float = option(
        0.6, "beta: share of a sequence that reorder shuffles", flag="--reorder"
    )
    cl_weight: float = option(0.1, "lambda: weight of the contrastive loss")
    temperature: float = option(1.0, "temperature of the contrastive loss (NT-Xent)")

    def validate(self, model: ModelConfig, train: TrainConfig) -> None:
        super().validate(model, train)
        check_augmentation_ratios(self.crop_ratio, self.mask_ratio, self.reorder_ratio)
        check_contrastive_weights(cl_weight=self.cl_weight, temperature=self.temperature)


class MaskToken(nn.Module):
    """The [mask] item of the mask augmentation: an input embedding that is never scored."""

    def __init__(self, num_items: int, hidden_size: int):
        super().__init__()
        self.num_items = num_items
        self.weight = nn.Parameter(torch.empty(hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The scale of a Xavier-normal item embedding row, as SASRec initializes them."""
        nn.init.normal_(self.weight, std=(2.0 / (self.num_items + 1 + self.weight.numel())) ** 0.5)


RECIPE = {
    **cosine_recipe(150, lr=2e-3, batch_size=256, warmup_steps=100),
    "train.aux_warmup_steps": 880,
}


@register(
    "cl4srec",
    summary="CL4SRec (Xie et al., ICDE 2022): SASRec + contrastive views (crop, mask, reorder)",
    options=CL4SRecOptions,
    starts_from=("sasrec", "cl4srec"),
    recipe=RECIPE,
)
class CL4SRec(SASRec):
    accepts_item_attributes = False  # --item-attributes: SASRec and FAME only

    def __init__(self, num_items: int, config: ModelConfig, options: CL4SRecOptions | None = None):
        super().__init__(num_items, config, options or CL4SRecOptions())
        self.mask_id = num_items + 1  # an id past every item: it only ever meets `item_inputs`
        self.mask_token = MaskToken(num_items, config.hidden_size)

    def item_inputs(self, item_seq: torch.Tensor) -> torch.Tensor:
        masked = (item_seq == self.mask_id).unsqueeze(-1)  # (B, L, 1)
        items = self.item_embedding(item_seq.masked_fill(masked.squeeze(-1), 0))  # (B, L, d)
        return torch.where(masked, self.mask_token.weight.to(items.dtype), items)

    def transform_batch(self, batch: TrainBatch) -> ViewBatch:
        """Two augmented views of every sequence, by two different augmentations."""
        sequences, targets = batch_sequences(batch)  # (B, W), (B, W)
        last_targets = targets[:, -1]  # (B,)
        first = torch.randint(3, last_targets.shape, device=sequences.device)  # (B,)
        second = (first + 1 + torch.randint(2, first.shape, device=first.device)) % 3
        options = self.options
        ratios = (options.crop_ratio, options.mask_ratio, options.reorder_ratio, self.mask_id)
        views = (augment(sequences, first, *ratios), augment(sequences, second, *ratios))
        return ViewBatch(batch, *views, last_targets)

    def loss(self, batch: ViewBatch | TrainBatch | tuple[torch.Tensor, torch.Tensor]) -> Losses:
        if not isinstance(batch, ViewBatch):
            batch = self.transform_batch(as_train_batch(batch))
        next_item = self.next_item_loss(batch.batch)
        # A view's representation: the encoder's output at its last position.
        first = encode_by_length(self.last_query_vectors, batch.first)  # (B, d)
        second = encode_by_length(self.last_query_vectors, batch.second)  # (B, d)
        contrastive = info_nce(first, second, self.options.temperature)  # NT-Xent, in-batch
        return {"next_item": next_item, "cl": self.options.cl_weight * contrastive}

    def prepare(self, source: SequentialRecommender, seed: int) -> list[str]:
        """--init-from a CL4SRec run (everything) or a SASRec run (all but the [mask] token,
        which keeps its initialization)."""
        self.check_same_block(source)
        if isinstance(source, CL4SRec):
            return super().prepare(source, seed)
        mine, theirs = self.state_dict(), source.state_dict()
        own = {name for name in mine if name.startswith("mask_token.")}
        if mine.keys() - own != theirs.keys() or any(
            mine[k].shape != theirs[k].shape for k in theirs
        ):
            raise ConfigError("--init-from: that SASRec run has other sizes than this one")
        return self.copy_matching(source)
