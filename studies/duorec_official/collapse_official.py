"""The per-column similarity of studies/collapse.py, for a checkpoint of the official DuoRec
code (RuihongQiu/DuoRec, RecBole-based). Run from that checkout, with its Python environment:

    python collapse_official.py MODEL_PTH [--users 2000]

It rebuilds the official dataset and model from the same arguments as duorec.sh, loads the
checkpoint, encodes the validation users' inputs (each user's sequence without the validation
and test items, as the official evaluation does) and prints, for the last real position and
positions before it, the mean cosine between different users' vectors and their mean norm.
"""

import argparse
import sys

import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.model.sequential_recommender.duorec import DuoRec

BACK = (1, 2, 3, 5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("--users", type=int, default=2000)
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # RecBole's Config parses the command line too
    torch.set_num_threads(1)
    settings = {
        "train_batch_size": 256,
        "lmd": 0.1,
        "lmd_sem": 0.1,
        "contrast": "us_x",
        "sim": "dot",
        "tau": 1,
        "use_gpu": False,
        "gpu_id": -1,
    }
    config = Config(
        model="DuoRec", dataset="Amazon_Beauty", config_file_list=["seq.yaml"], config_dict=settings
    )
    dataset = create_dataset(config)
    train_data, valid_data, _ = data_preparation(config, dataset)
    model = DuoRec(config, train_data.dataset)
    model.load_state_dict(
        torch.load(args.checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    )
    model.eval()
    features = valid_data.pre_processed_data  # the validation users' inputs and targets
    item_seq = features[model.ITEM_SEQ][: args.users]  # (U, L) right-padded
    lengths = features[model.ITEM_SEQ_LEN][: args.users]  # (U,)
    with torch.no_grad():
        position = torch.arange(item_seq.size(1)).unsqueeze(0).expand_as(item_seq)
        x = model.dropout(
            model.LayerNorm(model.item_embedding(item_seq) + model.position_embedding(position))
        )
        mask = model.get_attention_mask(item_seq)
        outputs = model.trm_encoder(x, mask, output_all_encoded_layers=True)[-1]  # (U, L, d)
    print(f"{len(item_seq)} validation users; the last real position and positions before it")
    for back in BACK:
        present = lengths >= back
        rows = torch.arange(len(item_seq))[present]
        vectors = outputs[rows, lengths[present] - back]  # (u, d)
        unit = torch.nn.functional.normalize(vectors, dim=1)
        cosine = unit @ unit.T
        count = len(unit)
        mean = (cosine.sum() - cosine.diagonal().sum()) / (count * (count - 1))
        print(
            f"position len-{back}: mean cosine {float(mean):.3f}, "
            f"mean norm {float(vectors.norm(dim=1).mean()):.1f}"
        )


if __name__ == "__main__":
    main()
