"""Start FAME from a trained SASRec (paper Sec. 4.4.2).

Copied: item and position embeddings (and item attribute embeddings, --item-attributes, where
the SASRec run has them), every block but the last, and from the last block its
query LayerNorm and its key and value weights (split into FAME's heads, whatever their number).
New and random: the expert queries, routers, FFN', W_f and the head gate.

`warm_start_new_parts` (not in the paper, off by default) starts those new parts close to
SASRec instead, so that fine-tuning does not begin from a random last layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from famerec.errors import ConfigError
from famerec.models.layers import computing_parts

if TYPE_CHECKING:
    from famerec.models.fame import FAME
    from famerec.models.sasrec import SASRec


def transfer_map(sasrec: SASRec) -> dict[str, str]:
    """SASRec parameter name -> FAME parameter name, for every tensor that is copied."""
    last = len(sasrec.blocks) - 1
    mapping = {}
    for name in sasrec.state_dict():
        if name.startswith(("item_embedding.", "position_embedding.", "item_attribute_embedding.")):
            mapping[name] = name
        elif name.startswith("blocks."):
            index, rest = name[len("blocks.") :].split(".", 1)
            if int(index) < last:
                mapping[name] = name
            elif rest.startswith("attn_norm."):
                mapping[name] = "facet_layer." + rest
            elif rest.startswith(("attn.key.", "attn.value.")):
                mapping[name] = "facet_layer.attention." + rest[len("attn.") :]
    return mapping


def check_compatible(fame: FAME, sasrec: SASRec) -> None:
    problems = []
    if fame.num_items != sasrec.num_items:
        problems.append(f"{sasrec.num_items} items in the SASRec run, {fame.num_items} here")
    for field, label in (
        ("hidden_size", "hidden size"),
        ("num_layers", "layers"),
        ("max_len", "max_len"),
    ):
        theirs, ours = getattr(sasrec.config, field), getattr(fame.config, field)
        if theirs != ours:
            problems.append(f"{label} {theirs} in the SASRec run, {ours} here")
    # FAME's blocks are the reference's; a SASRec drawn with PyTorch's initialization computes
    # the same function with its weights, so those copy (`computing_parts`).
    if computing_parts(sasrec.block_parts):
        problems.append(
            f"the SASRec run has --block {sasrec.options.block}; FAME's blocks are SASRec's own "
            "(a run with --block torch-init transfers)"
        )
    theirs, ours = (
        model.item_attribute_embedding.weight.shape if model.has_item_attributes else None
        for model in (sasrec, fame)
    )
    if theirs is not None and theirs != ours:
        problems.append(
            f"the SASRec run has item attribute embeddings {tuple(theirs)}, this run "
            + (f"{tuple(ours)} (other --item-attributes)" if ours else "none (--item-attributes)")
        )
    if problems:
        raise ConfigError("cannot start FAME from that SASRec run: " + "; ".join(problems))


@torch.no_grad()
def init_fame_from_sasrec(fame: FAME, sasrec: SASRec) -> list[str]:
    """Copy SASRec's tensors into FAME in place; returns the FAME names that were set."""
    if sasrec.name != "sasrec":
        raise ConfigError(f"FAME starts from a SASRec run, not a {sasrec.name} run")
    check_compatible(fame, sasrec)
    source = sasrec.state_dict()
    target = fame.state_dict()
    copied = []
    for source_name, target_name in transfer_map(sasrec).items():
        target[target_name].copy_(source[source_name])
        copied.append(target_name)
    return copied


@torch.no_grad()
def warm_start_new_parts(
    fame: FAME, sasrec: SASRec, noise: float = 0.1, generator: torch.Generator | None = None
) -> list[str]:
    """Start FAME's new parts where they reproduce SASRec's last attention and scoring.

    * every expert query of head h is SASRec's last-layer query for the same d' output slice,
      plus Gaussian noise of `noise` times that matrix's standard deviation (identical experts
      would get identical gradients and never diverge);
    * W_f^(h) selects the item embedding's h-th slice, scaled by H, and the gate starts uniform
      (W_g = 0, b_g = 0), so that the integrated score starts as x_v . [F^(1) | ... | F^(H)];
    * FFN' starts as zero (its output layer is zero), so F^(h) = LayerNorm(f^(h)) at first.
    The routers stay random. With as many heads as the SASRec run, FAME's query vector then
    starts as SASRec's last attention output normalized per head (another head count splits the
    same weights but attends differently). Returns the FAME names that were set.
    """
    check_compatible(fame, sasrec)
    layer = fame.facet_layer
    attention = layer.attention
    heads, experts, size = attention.num_heads, attention.num_experts, attention.head_size
    hidden = heads * size
    source = sasrec.blocks[-1].attn.query
    # (d_out, d_in) -> (H, 1, d', d_in), the same query slice for every expert of a head
    weight = source.weight.view(heads, 1, size, hidden).expand(heads, experts, size, hidden)
    bias = source.bias.view(heads, 1, size).expand(heads, experts, size)
    scale = noise * source.weight.std()
    jitter = torch.randn(weight.shape, generator=generator, dtype=weight.dtype) * scale
    attention.expert_queries.weight.copy_((weight + jitter.to(weight.device)).reshape(-1, hidden))
    attention.expert_queries.bias.copy_(bias.reshape(-1))
    selector = torch.eye(hidden, dtype=layer.facet_projection.dtype) * heads  # (d, d)
    layer.facet_projection.copy_(selector.view(hidden, heads, size).transpose(0, 1))  # (H, d, d')
    layer.head_gate.weight.zero_()
    layer.head_gate.bias.zero_()
    layer.head_ffn.outer.weight.zero_()
    layer.head_ffn.outer.bias.zero_()
    return [
        "facet_layer.attention.expert_queries.weight",
        "facet_layer.attention.expert_queries.bias",
        "facet_layer.facet_projection",
        "facet_layer.head_gate.weight",
        "facet_layer.head_gate.bias",
        "facet_layer.head_ffn.outer.weight",
        "facet_layer.head_ffn.outer.bias",
    ]
