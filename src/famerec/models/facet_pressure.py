"""FAME's facet pressure: losses, not in the paper, that push its heads toward facets.

Off by default. On planted facets nothing in the paper's objective pushes the heads apart; each
head alone already follows the user's facet. Each term below does:
* `--attribute-weight`: head k predicts the next item's attributes of kind k (one JSON file per
  kind, `--attributes`): cross-entropy of softmax_a(F^(k) . p_a), where attribute a is its
  items' mean sub-embedding p_a = mean_{v has a} x_v W_f^(k) (Eq. 9), so no new parameters;
  the attributes reach the model through `attach_data`, in buffers not saved with the weights;
* `--attribute-gate-weight`: the gate (Eq. 10) learns which kind explains the next item: its
  target is the posterior over kinds of the heads' attribute log-likelihoods (an E-step);
* `--gate-balance-weight`: mean_n H(g_n) - H(mean_n g_n) over the real positions n of the
  batch: each gate (Eq. 10) confident, the heads used equally over the batch;
* `--head-diversity-weight`: the mean squared correlation, over all items, between two heads'
  scores (Eq. 8) at each position, computed exactly through the items' d x d covariance.
Each is a named loss beside the unchanged next-item loss.

`FacetPressure` is a mixin of `models.fame.FAME`: its methods read FAME's facet layer
(`facet_layer.facet_projection`, W_f^(h) of Eq. 9) and item vectors. `FAME.loss` adds
`pressure_losses` to its next-item loss where `FAMEOptions.facet_pressure` is on.
"""

from __future__ import annotations

import torch

from famerec.data.attributes import ItemAttributes, item_attributes
from famerec.data.sequences import SequenceData
from famerec.errors import ConfigError, DataError
from famerec.models.losses import gate_balance_loss


class FacetPressure:
    """The facet-pressure terms of FAME, each a named loss weighted by its option."""

    def pressure_losses(
        self, states: torch.Tensor, gates: torch.Tensor, targets: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The weighted terms whose option is on, by name. states (P, H, d') head states F^(h)
        and gates (P, H) at the real positions, targets (P,) their next items 1..V."""
        options = self.options
        losses = {}
        if options.uses_attributes:
            log_likelihood, known = self.attribute_log_likelihoods(states, targets)  # (P, K)
            if options.attribute_weight:
                loss = self.attribute_loss(log_likelihood, known)
                losses["attributes"] = options.attribute_weight * loss
            if options.attribute_gate_weight:
                loss = self.attribute_gate_loss(gates, log_likelihood, known)
                losses["attribute_gate"] = options.attribute_gate_weight * loss
        if options.gate_balance_weight:
            losses["gate_balance"] = options.gate_balance_weight * gate_balance_loss(gates)
        if options.head_diversity_weight:
            diversity = self.head_diversity_loss(states)
            losses["head_diversity"] = options.head_diversity_weight * diversity
        return losses

    def read_attribute_kinds(self, data: SequenceData) -> None:
        """Read `--attributes`, one file per kind (head), into the buffers of `set_attributes`."""
        sources = self.options.attribute_sources
        kinds = [item_attributes(s, data) for s in sources]  # K, each over its own columns
        for kind, (source, members) in enumerate(zip(sources, kinds)):
            if members.is_empty():
                raise DataError(f"no item of the data has an attribute of kind {kind + 1}", source)
        kind_of = torch.cat([torch.full((m.width,), k) for k, m in enumerate(kinds)])
        self.set_attributes(ItemAttributes.side_by_side(kinds), kind_of)

    def set_attributes(self, members: ItemAttributes | torch.Tensor, kind_of: torch.Tensor) -> None:
        """members: item v has attribute a (sparse, or a dense (V + 1, A) matrix); kind_of
        (A,): each attribute's kind k, 0..K-1, supervising head k. Kept in buffers that are not
        saved with the weights (only training reads them). Attributes that no item has are
        left out."""
        if isinstance(members, torch.Tensor):
            members = ItemAttributes.from_matrix(members)
        start = int(members.offsets[1])  # the entries of items 1..V (row 0: padding)
        used = torch.bincount(members.columns[start:], minlength=members.width) > 0  # (A,)
        members, kind_of = members.select(used), kind_of[used].long()
        order = torch.sort(members.columns, stable=True).indices  # by attribute, then item
        self.num_attribute_kinds = int(kind_of.max()) + 1  # K
        self.register_buffer("attribute_item_offsets", members.offsets, persistent=False)
        self.register_buffer("attribute_columns", members.columns, persistent=False)  # (M,)
        self.register_buffer("attribute_kind", kind_of, persistent=False)  # (A,)
        self.register_buffer("kind_vocabulary", members.vocabulary, persistent=False)  # (A,)
        self.register_buffer("member_attribute", members.columns[order], persistent=False)
        self.register_buffer("member_item", members.items()[order], persistent=False)  # (M,)
        counts = torch.bincount(members.columns, minlength=members.width).float()  # (A,)
        self.register_buffer("attribute_counts", counts, persistent=False)

    @property
    def item_attributes(self) -> torch.Tensor:
        """(V + 1, A) uint8 the whole membership, dense: for a look at it (training builds the
        rows of its targets only, `attribute_rows`)."""
        return self.attribute_rows(torch.arange(len(self.attribute_item_offsets) - 1))

    def attribute_rows(self, items: torch.Tensor) -> torch.Tensor:
        """(*items.shape, A) uint8: item v has attribute a, for the items asked only."""
        offsets, columns = self.attribute_item_offsets, self.attribute_columns
        return ItemAttributes(offsets, columns, self.kind_vocabulary).rows(items)

    def attribute_log_likelihoods(
        self, states: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """How well head k predicts the next item's attributes of kind k (heads 1..K of H).

        states (P, H, d') head states F^(h) at real positions, targets (P,) item ids 1..V ->
        log-likelihoods (P, K) and (P, K) whether the next item has an attribute of kind k.
        Attribute a of kind k is represented in head k's space by its items' mean
        sub-embedding (Eq. 9), p_a = mean_{v has a} x_v W_f^(k), so nothing adds parameters:
        head k's distribution is softmax_a(F^(k) . p_a) over the attributes of kind k, and the
        log-likelihood is the mean log-probability of the next item's attributes of that kind.
        """
        if not hasattr(self, "attribute_columns"):
            raise ConfigError("FAME --attribute-weight needs item attributes: call attach_data")
        kinds = self.num_attribute_kinds
        items = self.item_vectors()  # (V + 1, d)
        sums = items.new_zeros(len(self.attribute_counts), items.shape[1]).index_add(
            0, self.member_attribute, items[self.member_item]
        )  # (A, d)
        means = sums / self.attribute_counts[:, None].to(sums.dtype)  # (A, d)
        projection = self.facet_layer.facet_projection[:kinds]  # (K, d, d') W_f^(k)
        prototypes = torch.einsum("ad,kde->kae", means, projection)  # (K, A, d') p_a per head
        logits = torch.einsum("pke,kae->pka", states[:, :kinds], prototypes)  # (P, K, A)
        heads = torch.arange(kinds, device=logits.device)
        own = self.attribute_kind[None, :] == heads[:, None]  # (K, A) attribute a is of kind k
        log_p = torch.log_softmax(logits.float().masked_fill(~own, float("-inf")), dim=-1)
        log_p = log_p.masked_fill(~own, 0.0)  # (P, K, A), 0 outside kind k (never -inf * 0)
        wanted = self.attribute_rows(targets)[:, None, :] * own  # (P, K, A) next item has a
        count = wanted.sum(-1)  # (P, K)
        log_likelihood = (wanted * log_p).sum(-1) / count.clamp_min(1)  # (P, K)
        return log_likelihood, count > 0

    def attribute_loss(self, log_likelihood: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood of the next item's attributes, over the (position,
        kind) pairs where the next item has an attribute of that kind."""
        return -log_likelihood[known].sum() / known.sum().clamp_min(1)

    def attribute_gate_loss(
        self, gate: torch.Tensor, log_likelihood: torch.Tensor, known: torch.Tensor
    ) -> torch.Tensor:
        """The gate learns which facet explains the next item: its target is the posterior
        r_k = softmax_k(log-likelihood_k) over the kinds the next item has (held fixed, as an
        E-step), and the loss is -sum_k r_k log(g_k / sum_{j<K} g_j) (heads without a kind
        are left alone). gate (P, H), log_likelihood and known (P, K)."""
        kinds = log_likelihood.shape[1]
        rows = known.sum(1) > 1  # positions whose next item has attributes of 2+ kinds
        scores = log_likelihood.detach()[rows].masked_fill(~known[rows], float("-inf"))
        posterior = torch.softmax(scores, dim=-1)  # (P', K)
        own = gate[rows, :kinds].float().clamp_min(1e-30)  # (P', K)
        log_gate = torch.log(own / own.sum(-1, keepdim=True))
        return -(posterior * log_gate).sum() / rows.sum().clamp_min(1)

    def head_diversity_loss(self, states: torch.Tensor) -> torch.Tensor:
        """Mean over positions and pairs of heads of the squared correlation, over all items,
        of the two heads' scores s_h(v) = x_v W_f^(h) . F^(h) (Eq. 8).

        Exact without scoring the items: s_h(v) = x_v . q_h with q_h = W_f^(h) F^(h), so
        cov_v(s_h, s_g) = q_h^T C q_g with C the items' (d x d) covariance, held fixed here.
        states (P, H, d') head states at real positions.
        """
        projection = self.facet_layer.facet_projection  # (H, d, d')
        queries = torch.einsum("phe,hde->phd", states, projection).float()  # (P, H, d) q_h
        items = self.item_vectors()[1:].detach().float()  # (V, d)
        centered = items - items.mean(0)
        covariance = centered.T @ centered / len(items)  # (d, d)
        gram = torch.einsum("phd,de,pge->phg", queries, covariance, queries)  # (P, H, H)
        std = gram.diagonal(dim1=1, dim2=2).clamp_min(1e-12).sqrt()  # (P, H)
        correlation = gram / (std[:, :, None] * std[:, None, :])  # (P, H, H)
        heads = correlation.shape[1]
        pairs = ~torch.eye(heads, dtype=torch.bool, device=correlation.device)  # (H, H)
        return correlation[:, pairs].pow(2).mean()
