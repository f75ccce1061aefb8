"""ICLRec: Intent Contrastive Learning for Sequential Recommendation (Chen, Liu, Li, McAuley &
Xiong, WWW 2022); official code salesforce/ICLRec.

SASRec trained with its next-item loss and two contrastive terms,

    L = L_next_item + w_intent * L_ICL + w_seq * L_SeqCL

learned by alternating, as the paper's generalized EM, between
* the E-step, before every epoch (`on_epoch_start`): encode every training sequence (eval
  mode), take the mean of its outputs over positions as its representation and cluster these
  with k-means into K intents (`kmeans`); the L2-normalized centroids are the intent
  prototypes;
* the M-step, the epoch's training, with two views of each sequence (CL4SRec's augmentations,
  one of crop, mask, reorder drawn for each view; `famerec.models.augment`):
  - L_SeqCL, the sequence (instance) term: NT-Xent between the two views, a view being
    represented by its outputs at all positions concatenated;
  - L_ICL, the intent term: NT-Xent between each view's mean representation and the prototype
    of its sequence's intent, the other views and prototypes of the batch being negatives;
    averaged over the two views. A sequence's intent is the centroid nearest to the mean of
    its outputs in this training step;
  - false-negative mitigation (FNM): in L_ICL, sequences of the batch with the same intent are
    not each other's negatives; in L_SeqCL, sequences with the same next item.
All similarities are dot products, at temperature 1.

Defaults follow the official code: src/scripts/run_beauty.sh (num_intent_clusters 256,
intent_cf_weight = w_intent = 0.1, cf_weight = w_seq = 0.1, seq_representation_type mean,
no warm-up epochs) and main.py (temperature 1.0, tao = crop ratio 0.2, gamma = mask ratio 0.7,
beta = reorder ratio 0.2, augment_type random, seq_representation_instancecl_type
concatenate); masked items become padding (id 0) as in data_augmentation.py; k-means runs 20
iterations (trainers.py / models.py `KMeans`, faiss niter 20).

Recipe (`RECIPE`; `--preset classic` trains without it, at a constant 1e-3 on batches of 256
for up to 200 epochs): CL4SRec's, Adam at a peak rate of 2e-3 on batches of 256, 100 warmup
steps, cosine decay to 0 over 150 epochs, and both contrastive terms ramped in over the first
880 steps (ten Beauty epochs; `--aux-warmup-steps`, after which the objective is the
original's). Found here, on Beauty's validation split only (benchmarks/RESULTS.md, "ICLRec's
recipe: three seeds"): over three seeds its best validation NDCG@10 is 0.0712 against the old
recipe's 0.0714, its test NDCG@10 0.0569 against 0.0566 (paired p = 0.35); it reaches the
target of 0.0708 at epochs 79-117 instead of 156-183, and a run takes 56-58 minutes of one
thread instead of 82 (the same machine). Without the ramp the sequence term's gradient,
about 30 times the next-item loss's, steers Adam's first steps and does not shrink by itself.

Differences from the official code, and why:
* famerec's SASRec is the encoder and the next-item loss is its full-softmax cross-entropy (the
  official code trains a BERT-style post-LN Transformer with GELU and a binary cross-entropy
  with one sampled negative per position; its Beauty script uses 1 layer where famerec's
  shared default is 2, `--layers 1` matches it): ICLRec then differs from famerec's SASRec only
  by its contrastive terms;
* FNM is on by default, as the paper presents the method; the official Beauty script runs
  without it (its `--de_noise`, which switches both exclusions); `--no-fnm` does the same;
* padding positions do not enter a representation (the official mean and concatenation
  include the outputs at padding positions, which depend on the position only); masked items,
  being padding, are left out too;
* each view is encoded once and gives both its concatenated and its mean representation (the
  official code encodes each view once for each term, with other dropout masks), and the
  intents of a batch come from the outputs of its next-item pass (as the official code does);
* k-means: Lloyd's algorithm in torch from greedy k-means++ seeds, once per epoch; faiss keeps
  the best of 5 runs from random points (nredo 5), which costs 5 times as much; an empty
  cluster restarts at a random point. Randomness comes from torch's generator.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

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
from famerec.models.base import EpochContext, Losses
from famerec.models.losses import info_nce
from famerec.models.registry import cosine_recipe, register
from famerec.models.sasrec import SASRec, SASRecOptions

KMEANS_ITERATIONS = 20  # faiss Clustering.niter in the official code
ENCODE_ROWS = 2048  # training sequences encoded at once for the clustering


@dataclass
class ICLRecOptions(SASRecOptions):
    """ICLRec's own settings (`--model iclrec`)."""

    num_intents: int = option(256, "K: intents, i.e. k-means clusters", flag="--intents")
    intent_weight: float = option(0.1, "weight of the intent contrastive loss L_ICL")
    cl_weight: float = option(0.1, "weight of the sequence contrastive loss L_SeqCL")
    temperature: float = option(1.0, "temperature of both contrastive losses")
    crop_ratio: float = option(0.2, "share of a sequence that crop keeps (tao)", flag="--crop")
    mask_ratio: float = option(0.7, "share of a sequence's items masked (gamma)", flag="--mask")
    reorder_ratio: float = option(
        0.2, "share of a sequence that reorder shuffles (beta)", flag="--reorder"
    )
    fnm: bool = option(
        True,
        "false-negative mitigation: sequences with the same intent (intent loss) or the same "
        "next item (sequence loss) are not each other's negatives",
    )
    instance_representation: str = option(
        "concatenate",
        "a view's representation in the sequence loss: its outputs at all positions "
        "concatenated, or their mean",
        choices=("concatenate", "mean"),
    )

    def validate(self, model: ModelConfig, train: TrainConfig) -> None:
        super().validate(model, train)
        if self.num_intents < 1:
            raise ConfigError(f"--intents must be a positive integer, got {self.num_intents}")
        check_augmentation_ratios(self.crop_ratio, self.mask_ratio, self.reorder_ratio)
        check_contrastive_weights(
            intent_weight=self.intent_weight,
            cl_weight=self.cl_weight,
            temperature=self.temperature,
        )


def nearest_centroid(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """(N, d), (K, d) -> (N,) index of each point's nearest centroid (squared L2 distance)."""
    # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2, and ||x||^2 is the same for every c.
    return (centroids.pow(2).sum(1) - 2 * points @ centroids.T).argmin(1)


def kmeans_plus_plus(points: torch.Tensor, k: int) -> torch.Tensor:
    """k initial centroids (k, d) from (N, d) points by greedy k-means++ seeding: each next
    seed is, of 2 + ln k points drawn with probability proportional to their squared distance
    to the seeds so far, the one that leaves the smallest sum of squared distances."""
    candidates = 2 + int(math.log(k))
    squares = points.pow(2).sum(1)  # (N,)
    seeds = [points[torch.randint(len(points), (1,), device=points.device)]]  # (1, d) each
    nearest = (points - seeds[0]).pow(2).sum(1)  # (N,) squared distance to the nearest seed
    for _ in range(k - 1):  # k steps, each vectorized over all points and candidates
        drawn = points[torch.multinomial(nearest + 1e-12, candidates, replacement=True)]
        # (c, N) squared distances ||x||^2 - 2 x.y + ||y||^2
        distances = (squares + drawn.pow(2).sum(1, keepdim=True) - 2 * drawn @ points.T).clamp(
            min=0
        )
        after = torch.minimum(nearest, distances)  # (c, N) the nearest seed with each candidate
        best = after.sum(1).argmin()
        seeds.append(drawn[best].unsqueeze(0))
        nearest = after[best]
    return torch.cat(seeds)


def kmeans(points: torch.Tensor, k: int, iterations: int = KMEANS_ITERATIONS) -> torch.Tensor:
    """Lloyd's k-means of (N, d) points into k <= N clusters -> (k, d) centroids.

    Starts from greedy k-means++ seeds; a cluster left empty restarts at a random point.
    """
    count, dim = points.shape
    centroids = kmeans_plus_plus(points, k)  # (k, d)
    for _ in range(iterations):
        assignment = nearest_centroid(points, centroids)  # (N,)
        sums = torch.zeros(k, dim, device=points.device, dtype=points.dtype)
        sums.index_add_(0, assignment, points)  # (k, d)
        sizes = torch.bincount(assignment, minlength=k).unsqueeze(1)  # (k, 1)
        restart = points[torch.randint(count, (k,), device=points.device)]  # (k, d)
        centroids = torch.where(sizes > 0, sums / sizes.clamp(min=1), restart)
    return centroids


def masked_mean(outputs: torch.Tensor, item_seq: torch.Tensor) -> torch.Tensor:
    """(b, w, d) outputs, (b, w) ids -> (b, d) mean over the real (non-zero) positions."""
    real = (item_seq != 0).unsqueeze(-1).to(outputs.dtype)  # (b, w, 1)
    return (outputs * real).sum(1) / real.sum(1).clamp(min=1)


class IntentClusters:
    """The E-step: K intent centroids of the training sequences' mean representations."""

    def __init__(self, centroids: torch.Tensor):
        self.centroids = centroids  # (K, d), assigns sequences to intents
        self.prototypes = F.normalize(centroids, dim=1)  # (K, d), contrasted with the views

    def intents(self, representations: torch.Tensor) -> torch.Tensor:
        """(B, d) mean representations -> (B,) intent of each (nearest centroid)."""
        return nearest_centroid(representations.float(), self.centroids)


RECIPE = {  # CL4SRec's (models/cl4srec.py)
    **cosine_recipe(150, lr=2e-3, batch_size=256, warmup_steps=100),
    "train.aux_warmup_steps": 880,
}


@register(
    "iclrec",
    summary="ICLRec (Chen et al., WWW 2022): SASRec + k-means intents and contrastive views",
    options=ICLRecOptions,
    starts_from=("sasrec", "iclrec"),
    recipe=RECIPE,
)
class ICLRec(SASRec):
    accepts_item_attributes = False  # --item-attributes: SASRec and FAME only

    def __init__(self, num_items: int, config: ModelConfig, options: ICLRecOptions | None = None):
        super().__init__(num_items, config, options or ICLRecOptions())
        # The prototypes of the last clustering; recomputed every epoch, so never saved.
        centroids = torch.empty(0, config.hidden_size)
        self.register_buffer("intent_centroids", centroids, persistent=False)
        self.clusterings = 0  # E-steps done by this object

    # -- E-step ----------------------------------------------------------------------------

    @torch.no_grad()
    def mean_representations(self, inputs: torch.Tensor, device: torch.device) -> torch.Tensor:
        """(N, L) left-padded training inputs -> (N, d) mean outputs, in eval mode, encoded in
        chunks of similar length (each only as wide as its longest sequence)."""
        was_training = self.training
        self.eval()
        lengths = (inputs != 0).sum(1)
        order = torch.argsort(lengths)
        means = torch.empty(len(inputs), self.hidden_size, device=device)
        for rows in order.split(ENCODE_ROWS):
            width = max(int(lengths[rows].max()), 1)
            item_seq = inputs[rows, inputs.shape[1] - width :].to(device)
            means[rows.to(device)] = masked_mean(self.query_vectors(item_seq), item_seq).float()
        self.train(was_training)
        return means

    def on_epoch_start(self, context: EpochContext) -> dict[str, Any]:
        """Cluster the training sequences into intents (the E-step), before every epoch."""
        started = time.perf_counter()
        representations = self.mean_representations(context.train.inputs, context.device)
        k = min(self.options.num_intents, len(representations))
        self.intent_centroids = kmeans(representations, k)
        if context.device.type == "cuda":
            torch.cuda.synchronize(context.device)
        self.clusterings += 1
        return {"intents": k, "intent_seconds": round(time.perf_counter() - started, 3)}

    # -- M-step ----------------------------------------------------------------------------

    def transform_batch(self, batch: TrainBatch) -> ViewBatch:
        """Two views of every sequence, each by one augmentation drawn at random."""
        sequences, targets = batch_sequences(batch)  # (B, W), (B, W)
        options = self.options
        ratios = (options.crop_ratio, options.mask_ratio, options.reorder_ratio, 0)
        choices = torch.randint(3, (2, len(sequences)), device=sequences.device)  # (2, B)
        views = [augment(sequences, choice, *ratios) for choice in choices]
        return ViewBatch(batch, *views, targets[:, -1])

    def view_representations(self, item_seq: torch.Tensor, width: int) -> torch.Tensor:
        """(b, w) view -> (b, width * d + d): its outputs at all positions, left-padded to
        `width` and concatenated, followed by their mean; padding positions count as zero."""
        outputs = self.query_vectors(item_seq)  # (b, w, d)
        real = (item_seq != 0).unsqueeze(-1).to(outputs.dtype)
        concatenated = F.pad(outputs * real, (0, 0, width - item_seq.shape[1], 0)).flatten(1)
        return torch.cat([concatenated, masked_mean(outputs, item_seq)], dim=1)

    def loss(self, batch: ViewBatch | TrainBatch | tuple[torch.Tensor, torch.Tensor]) -> Losses:
        if not isinstance(batch, ViewBatch):
            batch = self.transform_batch(as_train_batch(batch))
        options, dim = self.options, self.hidden_size
        parts = batch.batch.parts
        part_outputs = [self.query_vectors(item_seq) for item_seq, _ in parts]  # (b, w, d) each
        next_item = self.next_item_loss(batch.batch, part_queries=part_outputs)

        # Each sequence's intent: the centroid nearest to its mean output in this step.
        with torch.no_grad():
            means = torch.cat(
                [masked_mean(out, seq) for out, (seq, _) in zip(part_outputs, parts)]
            )  # (B, d)
            if self.intent_centroids.numel():
                clusters = IntentClusters(self.intent_centroids)
            else:  # `loss` called before any E-step: cluster this batch
                k = min(options.num_intents, len(means))
                clusters = IntentClusters(kmeans(means.float(), k))
            intents = clusters.intents(means)  # (B,)

        width = batch.first.shape[1]
        views = [
            encode_by_length(lambda seq: self.view_representations(seq, width), view)
            for view in (batch.first, batch.second)
        ]  # 2 x (B, W d + d)
        view_means = [view[:, -dim:] for view in views]  # 2 x (B, d)
        concatenated = [view[:, :-dim] for view in views]  # 2 x (B, W d)
        instances = view_means if options.instance_representation == "mean" else concatenated

        same_target = same_intent = None
        if options.fnm:
            same_target = batch.last_targets.unsqueeze(1) == batch.last_targets.unsqueeze(0)
            same_intent = intents.unsqueeze(1) == intents.unsqueeze(0)
        sequence_cl = info_nce(*instances, options.temperature, exclude=same_target)
        prototypes = clusters.prototypes[intents]  # (B, d)
        intent_cl = (
            info_nce(view_means[0], prototypes, options.temperature, exclude=same_intent)
            + info_nce(view_means[1], prototypes, options.temperature, exclude=same_intent)
        ) / 2
        return {
            "next_item": next_item,
            "cl": options.cl_weight * sequence_cl,
            "intent": options.intent_weight * intent_cl,
        }
