"""Start FAME from a trained SASRec (paper Sec. 4.4.2).

Copied: item and position embeddings, every block but the last, and from the last block its
query LayerNorm and its key and value weights (split into FAME's heads, whatever their number).
New and random: the expert queries, routers, FFN', W_f and the head gate.
"""

from __future__ import annotations

import torch

from famerec.errors import ConfigError
from famerec.models.fame import FAME
from famerec.models.sasrec import SASRec


def transfer_map(sasrec: SASRec) -> dict[str, str]:
    """SASRec parameter name -> FAME parameter name, for every tensor that is copied."""
    last = len(sasrec.blocks) - 1
    mapping = {}
    for name in sasrec.state_dict():
        if name.startswith(("item_embedding.", "position_embedding.")):
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
    if problems:
        raise ConfigError("cannot start FAME from that SASRec run: " + "; ".join(problems))


@torch.no_grad()
def init_fame_from_sasrec(fame: FAME, sasrec: SASRec) -> list[str]:
    """Copy SASRec's tensors into FAME in place; returns the FAME names that were set."""
    check_compatible(fame, sasrec)
    source = sasrec.state_dict()
    target = fame.state_dict()
    copied = []
    for source_name, target_name in transfer_map(sasrec).items():
        target[target_name].copy_(source[source_name])
        copied.append(target_name)
    return copied
