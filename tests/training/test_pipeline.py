import json
import logging
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from famerec.config import RunConfig
from famerec.errors import ConfigError, FamerecError
from famerec.evaluation import metrics_from_ranks
from famerec.runconfig import pretrain_config
from famerec.runs.dir import RunDir, read_ranks
from famerec.training import load_run, resolve_config, train_run
from tests.conftest import tiny_overrides, write_sequences

METRIC_KEYS = {"HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20"}


def test_run_directory_contents_and_metrics_contract(tiny_config, tmp_path):
    out = tmp_path / "run"
    metrics = train_run(tiny_config, out, progress=False)
    for name in (
        "config.json",
        "model.safetensors",
        "metrics.json",
        "log.jsonl",
        "checkpoint.pt",
        "dataset.npz",
        "ranks.npz",
    ):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert set(saved["valid"]) == METRIC_KEYS and set(saved["test"]) == METRIC_KEYS
    assert isinstance(saved["best_epoch"], int) and saved["epochs_run"] == 2
    assert saved["train_seconds"] > 0
    assert {"name", "users", "items", "actions"} <= set(saved["dataset"])
    assert saved["config"] == tiny_config.to_dict()
    assert saved["precision"] == "fp32" and saved["device"] == "cpu"
    # where it ran, so that minutes from two machines are never taken for one machine's
    assert (
        saved["machine"]["cpu"] and saved["machine"]["cores"] >= 1 and "gpu" not in saved["machine"]
    )
    assert RunConfig.load(out / "config.json") == tiny_config
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    assert set(log[0]["valid"]) == METRIC_KEYS and "train_loss" in log[0]


def test_model_learns_the_pattern(seq_file, tmp_path):
    config = RunConfig().with_overrides(
        tiny_overrides(
            seq_file,
            **{"train.epochs": 25, "train.patience": 25, "model.dropout": 0.0, "train.lr": 5e-3},
        )
    )
    metrics = train_run(config, tmp_path / "run", progress=False)
    # 40 items, next item is +1 with p=0.8: chance HR@5 is ~0.12
    assert metrics["valid"]["HR@5"] > 0.5


def test_same_seed_same_result(tiny_config, tmp_path):
    first = train_run(tiny_config, tmp_path / "a", progress=False)
    second = train_run(tiny_config, tmp_path / "b", progress=False)
    assert first["valid"] == second["valid"] and first["test"] == second["test"]
    a, b = load_file(tmp_path / "a/model.safetensors"), load_file(tmp_path / "b/model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("model", ["sasrec", "fame"])
def test_resume_ends_like_an_uninterrupted_run(seq_file, tmp_path, model):
    config = RunConfig().with_overrides(
        tiny_overrides(
            seq_file,
            **{
                "train.epochs": 4,
                "train.patience": 10,
                "model.name": model,
                "model.hidden_size": 64,
            },
        )
    )
    whole = train_run(config, tmp_path / "whole", progress=False)
    assert train_run(config, tmp_path / "cut", progress=False, stop_after=2) is None
    assert not (tmp_path / "cut/metrics.json").exists()
    with pytest.raises(ConfigError, match="unfinished run; continue it with --resume"):
        train_run(config, tmp_path / "cut", progress=False)
    resumed = train_run(config, tmp_path / "cut", resume=True, progress=False)
    for key in ("valid", "test", "best_epoch", "epochs_run"):
        assert resumed[key] == whole[key], key
    a = load_file(tmp_path / "whole/model.safetensors")
    b = load_file(tmp_path / "cut/model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = (tmp_path / "cut/log.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in log] == [1, 2, 3, 4]


def test_finished_run_is_not_overwritten_silently(tiny_config, tmp_path):
    out = tmp_path / "run"
    train_run(tiny_config, out, progress=False)
    with pytest.raises(ConfigError, match="holds a finished run"):
        train_run(tiny_config, out, progress=False)
    assert train_run(tiny_config, out, overwrite=True, progress=False)["epochs_run"] == 2


@pytest.mark.parametrize("old_checkpoint", [False, True])
def test_wall_time_counts_every_sitting(seq_file, tmp_path, old_checkpoint):
    """A run resumed over sittings reports the wall time of all of them, not of the last; a
    checkpoint written before it kept wall time counts its log's time instead."""
    config = RunConfig().with_overrides(tiny_overrides(seq_file, **{"train.epochs": 3}))
    out = tmp_path / "run"
    train_run(config, out, progress=False, stop_after=2)
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    earlier = RunDir(out).logged_seconds()
    assert checkpoint["state"]["wall_seconds"] >= earlier > 0
    if old_checkpoint:
        del checkpoint["state"]["wall_seconds"]
        torch.save(checkpoint, out / "checkpoint.pt")
    else:
        earlier = checkpoint["state"]["wall_seconds"]
    resumed = train_run(config, out, resume=True, progress=False)
    last_epoch = RunDir(out).read_log()[-1]
    assert last_epoch["epoch"] == 3
    this_sitting = last_epoch["train_seconds"] + last_epoch["eval_seconds"]
    assert resumed["wall_seconds"] >= round(earlier + this_sitting, 2)
    assert resumed["wall_seconds"] >= resumed["train_seconds"]


def test_adamw_decouples_weight_decay_and_resumes_exactly(seq_file, tmp_path):
    """--optimizer adamw: with no weight decay it is Adam step for step; with some, the decay
    is AdamW's (weights end elsewhere than Adam's L2 puts them), and a cut run resumes exactly."""

    def run(name, stop_after=None, resume=False, **train):
        overrides = {"train.epochs": 3, "train.patience": 10, "model.hidden_size": 16}
        overrides.update({f"train.{k}": v for k, v in train.items()})
        config = RunConfig().with_overrides(tiny_overrides(seq_file, **overrides))
        if train_run(config, tmp_path / name, progress=False, stop_after=stop_after, resume=resume):
            return load_file(tmp_path / name / "model.safetensors")
        return None

    adam, adamw = run("adam"), run("adamw", optimizer="adamw")
    assert all(torch.equal(adam[k], adamw[k]) for k in adam)
    decayed = run("decayed", optimizer="adamw", weight_decay=0.5)
    l2 = run("l2", weight_decay=0.5)
    assert not all(torch.equal(decayed[k], l2[k]) for k in l2)
    assert not all(torch.equal(decayed[k], adamw[k]) for k in adamw)
    run("cut", stop_after=1, optimizer="adamw", weight_decay=0.5)
    resumed = run("cut", resume=True, optimizer="adamw", weight_decay=0.5)
    assert all(torch.equal(decayed[k], resumed[k]) for k in decayed)
    assert json.loads((tmp_path / "cut/config.json").read_text())["train"]["optimizer"] == "adamw"


def test_resume_refuses_changed_settings(tiny_config, tmp_path):
    out = tmp_path / "run"
    train_run(tiny_config, out, progress=False, stop_after=1)
    with pytest.raises(ConfigError, match="hidden_size"):
        resolve_config(out, {"model.hidden_size": 32}, resume=True)
    assert resolve_config(out, {"train.threads": 2}, resume=True).train.threads == 2


def test_resume_follows_moved_data_but_refuses_other_data(seq_file, tmp_path):
    """A run cut off on one machine resumes on another, where the data lies elsewhere."""
    config = RunConfig().with_overrides(tiny_overrides(seq_file, **{"train.epochs": 3}))
    whole = train_run(config, tmp_path / "whole", progress=False)
    out = tmp_path / "cut"
    train_run(config, out, progress=False, stop_after=1)
    moved = tmp_path / "elsewhere" / "data.txt"
    moved.parent.mkdir()
    moved.write_bytes(seq_file.read_bytes())
    resumed = train_run(
        resolve_config(out, {"data.path": str(moved)}, resume=True),
        out,
        resume=True,
        progress=False,
    )
    assert resumed["test"] == whole["test"]
    assert json.loads((out / "config.json").read_text())["data"]["path"] == str(moved)

    other = tmp_path / "other.txt"
    other.write_text("".join(sorted(seq_file.read_text().splitlines(keepends=True))[1:]))
    cut = tmp_path / "cut2"
    train_run(config, cut, progress=False, stop_after=1)
    with pytest.raises(FamerecError, match="is not the data this run started with"):
        train_run(
            resolve_config(cut, {"data.path": str(other)}, resume=True),
            cut,
            resume=True,
            progress=False,
        )


def test_fame_from_sasrec_run_records_its_origin(seq_file, tmp_path):
    base = tiny_overrides(seq_file, **{"model.hidden_size": 64})
    sasrec = RunConfig().with_overrides(base)
    train_run(sasrec, tmp_path / "sasrec", progress=False)
    fame = RunConfig().with_overrides(
        {
            **base,
            "model.name": "fame",
            "model.num_heads": 4,
            "train.init_from": str(tmp_path / "sasrec"),
        }
    )
    metrics = train_run(fame, tmp_path / "fame", progress=False)
    assert metrics["init_from"]["run"] == str(tmp_path / "sasrec")
    assert (
        metrics["init_from"]["test"]
        == json.loads((tmp_path / "sasrec/metrics.json").read_text())["test"]
    )


def test_pretrain_runs_both_stages_and_keeps_both(seq_file, tmp_path):
    config = RunConfig().with_overrides(
        tiny_overrides(
            seq_file, **{"model.hidden_size": 64, "model.name": "fame", "train.pretrain": True}
        )
    )
    metrics = train_run(config, tmp_path / "fame", progress=False)
    assert (tmp_path / "fame/pretrain/metrics.json").is_file()
    assert load_run(tmp_path / "fame/pretrain").config.model.name == "sasrec"
    assert metrics["init_from"]["run"] == str(tmp_path / "fame/pretrain")
    assert load_run(tmp_path / "fame").config.model.name == "fame"
    stage_one = json.loads((tmp_path / "fame/pretrain/metrics.json").read_text())
    for cost in ("train_seconds", "wall_seconds"):  # both stages' time can be summed
        assert metrics["init_from"][cost] == stage_one[cost] > 0


def test_a_started_pretrain_stage_keeps_its_own_settings(seq_file, tmp_path, caplog):
    """A recipe changed between sittings must not rewrite a started first stage's config."""
    config = RunConfig().with_overrides(
        tiny_overrides(
            seq_file, **{"model.hidden_size": 64, "model.name": "fame", "train.pretrain": True}
        )
    )
    fresh = pretrain_config(config)
    other = "sasrec" if fresh.flat()["sasrec.block"] != "sasrec" else "torch-init"
    started = fresh.with_overrides({"sasrec.block": other, "train.eval_batch_size": 32})
    assert train_run(started, tmp_path / "fame/pretrain", progress=False, stop_after=1) is None
    with caplog.at_level(logging.WARNING, logger="famerec"):
        train_run(config, tmp_path / "fame", resume=True, progress=False)
    assert f"keeps the settings it started with: sasrec.block '{other}'" in caplog.text
    # as an older recipe had it; what any resume may change follows this call
    assert RunConfig.load(tmp_path / "fame/pretrain/config.json") == started.with_overrides(
        {"train.eval_batch_size": 64}
    )
    log = (tmp_path / "fame/pretrain/log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2]  # resumed, not restarted


def test_init_from_other_dataset_fails_before_writing(seq_file, tmp_path):
    base = tiny_overrides(seq_file, **{"model.hidden_size": 64})
    train_run(RunConfig().with_overrides(base), tmp_path / "sasrec", progress=False)
    other = write_sequences(tmp_path / "other.txt", seed=5)
    fame = RunConfig().with_overrides(
        {
            **base,
            "data.path": str(other),
            "model.name": "fame",
            "train.init_from": str(tmp_path / "sasrec"),
        }
    )
    with pytest.raises(ConfigError, match="it was trained on dataset 'tiny'"):
        train_run(fame, tmp_path / "fame", progress=False)
    assert not (tmp_path / "fame").exists()


def test_init_from_needs_a_finished_run(seq_file, tmp_path):
    base = tiny_overrides(seq_file, **{"model.hidden_size": 64})
    train_run(RunConfig().with_overrides(base), tmp_path / "cut", progress=False, stop_after=1)
    fame = RunConfig().with_overrides(
        {**base, "model.name": "fame", "train.init_from": str(tmp_path / "cut")}
    )
    with pytest.raises(ConfigError, match="not a finished famerec run"):
        train_run(fame, tmp_path / "fame", progress=False)


def test_bf16_autocast_trains_like_fp32(seq_file, tmp_path):
    # the precision used on CUDA by default, exercised on the CPU: same start, same batches
    learn = {"train.epochs": 8, "model.dropout": 0.0, "train.lr": 5e-3}
    runs = {}
    for precision in ("fp32", "bf16"):
        overrides = tiny_overrides(seq_file, **learn, **{"train.precision": precision})
        metrics = train_run(
            RunConfig().with_overrides(overrides), tmp_path / precision, progress=False
        )
        log = (tmp_path / precision / "log.jsonl").read_text().splitlines()
        runs[precision] = metrics, [json.loads(r)["train_loss"] for r in log]
    (fp32, fp32_losses), (bf16, bf16_losses) = runs["fp32"], runs["bf16"]
    assert fp32["valid"]["NDCG@10"] > 0.5  # both learned the pattern, to the same level
    assert bf16["valid"]["NDCG@10"] == pytest.approx(fp32["valid"]["NDCG@10"], abs=0.03)
    assert bf16["test"]["NDCG@10"] == pytest.approx(fp32["test"]["NDCG@10"], abs=0.03)
    assert bf16_losses == pytest.approx(fp32_losses, rel=0.01)


def test_freeze_epochs_keep_the_copied_weights_fixed_at_first(seq_file, tmp_path):
    base = tiny_overrides(seq_file, **{"model.hidden_size": 64})
    train_run(RunConfig().with_overrides(base), tmp_path / "sasrec", progress=False)
    fame = RunConfig().with_overrides(
        {
            **base,
            "model.name": "fame",
            "train.init_from": str(tmp_path / "sasrec"),
            "train.freeze_epochs": 1,
            "train.epochs": 3,
        }
    )
    assert train_run(fame, tmp_path / "fame", progress=False, stop_after=1) is None
    after_one = torch.load(tmp_path / "fame/checkpoint.pt", weights_only=True)["model"]
    sasrec = load_file(tmp_path / "sasrec/model.safetensors")
    assert torch.equal(after_one["item_embedding.weight"], sasrec["item_embedding.weight"])
    assert torch.equal(after_one["blocks.0.ffn.inner.weight"], sasrec["blocks.0.ffn.inner.weight"])
    torch.manual_seed(fame.train.seed)
    from famerec.models import build_model

    initial = build_model(fame.model, 40).state_dict()
    assert not torch.equal(
        after_one["facet_layer.head_gate.weight"], initial["facet_layer.head_gate.weight"]
    )
    train_run(fame, tmp_path / "fame", resume=True, progress=False)
    after_three = torch.load(tmp_path / "fame/checkpoint.pt", weights_only=True)["model"]
    assert not torch.equal(after_three["item_embedding.weight"], sasrec["item_embedding.weight"])
    log = [json.loads(r) for r in (tmp_path / "fame/log.jsonl").read_text().splitlines()]
    assert [r["pretrained_frozen"] for r in log] == [True, False, False]


FAME_64 = {"model.name": "fame", "model.hidden_size": 64}


def test_freeze_epochs_need_a_pretrained_start(tiny_config):
    with pytest.raises(ConfigError, match="--freeze-epochs needs --init-from or --pretrain"):
        tiny_config.with_overrides(FAME_64 | {"fame.freeze_epochs": 2}).validate()


def test_warm_start_needs_a_pretrained_start(tiny_config):
    with pytest.raises(ConfigError, match="--warm-start needs --init-from or --pretrain"):
        tiny_config.with_overrides(FAME_64 | {"fame.warm_start": True}).validate()


def test_model_options_belong_to_their_model(tiny_config):
    with pytest.raises(ConfigError, match="--experts applies to --model fame, not sasrec"):
        tiny_config.with_overrides({"fame.num_experts": 2})
    old_style = tiny_config.with_overrides(FAME_64 | {"model.num_experts": 2})  # older key
    assert old_style.options.num_experts == 2


def test_warm_start_keeps_what_sasrec_learned(seq_file, tmp_path):
    """Before any fine-tuning (lr ~ 0), a warm-started FAME ranks like the SASRec it came from;
    the paper's random new parts do not."""
    learn = {"train.epochs": 25, "train.patience": 25, "model.dropout": 0.0, "train.lr": 5e-3}
    base = tiny_overrides(seq_file, **learn, **{"model.hidden_size": 64})
    sasrec = train_run(RunConfig().with_overrides(base), tmp_path / "sasrec", progress=False)
    frozen = {**base, "model.name": "fame", "train.epochs": 1, "train.lr": 1e-12}
    frozen["train.init_from"] = str(tmp_path / "sasrec")
    hit_rates = {}
    for warm in (False, True):
        config = RunConfig().with_overrides({**frozen, "fame.warm_start": warm})
        metrics = train_run(config, tmp_path / f"fame-{warm}", progress=False)
        assert metrics["config"]["fame"]["warm_start"] is warm
        hit_rates[warm] = metrics["valid"]["HR@5"]
    assert hit_rates[True] > 0.8 * sasrec["valid"]["HR@5"]
    assert hit_rates[False] < 0.5 * sasrec["valid"]["HR@5"]


def test_ranks_file_reproduces_the_metrics(tiny_config, tmp_path):
    metrics = train_run(tiny_config, tmp_path / "run", progress=False)
    ranks = read_ranks(tmp_path / "run/ranks.npz")
    assert sorted(ranks) == ["test", "valid"]
    for split, (users, split_ranks) in ranks.items():
        assert users.dtype == split_ranks.dtype == np.int32
        assert users.tolist() == list(range(metrics["dataset"]["users"]))
        recomputed = metrics_from_ranks(torch.from_numpy(split_ranks.astype(np.int64)))
        assert recomputed == pytest.approx(metrics[split])


def test_path_options_are_saved_absolute_so_resume_works_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    overrides = {
        "model.name": "fame",
        "fame.attribute_weight": 1.0,
        "fame.attributes": "genre.json, ~/actor.json",
    }
    config = resolve_config(tmp_path / "run", overrides)
    genre, actor = config.options.attributes.split(",")
    assert genre == str(tmp_path / "genre.json")
    assert actor.endswith("/actor.json") and "~" not in actor

    # every config holds absolute paths however it is built: made so once, where it is built
    built = RunConfig().with_overrides({"data.path": "seqs.txt", "data.items": "~/items.csv"})
    assert built.data.path == str(tmp_path / "seqs.txt") and "~" not in built.data.items
    from_file = RunConfig.from_dict({"data": {"path": "seqs.txt"}})
    assert from_file.data.path == built.data.path
    bundled = {"model.name": "fame", "fame.attributes": "bundled"}
    assert RunConfig().with_overrides(bundled).options.attributes == "bundled"


def test_runs_keep_their_attribute_files_and_resume_where_they_lie_elsewhere(seq_file, tmp_path):
    """FAME's --attributes files move with their run: a cut-off run resumes from another path
    holding the same bytes (another checkout), other files are refused."""
    kinds = []
    for name, modulus in (("a", 3), ("b", 4)):
        path = tmp_path / "here" / f"{name}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps({str(i): [i % modulus] for i in range(1, 41)}))
        kinds.append(path)
    overrides = tiny_overrides(
        seq_file,
        **{"model.name": "fame", "model.hidden_size": 64, "train.epochs": 2},
        **{"fame.attribute_weight": 0.5, "fame.attributes": ",".join(map(str, kinds))},
    )
    config = RunConfig().with_overrides(overrides)
    whole = train_run(config, tmp_path / "whole", progress=False)
    out = tmp_path / "cut"
    assert train_run(config, out, progress=False, stop_after=1) is None
    assert sorted(p.name for p in (out / "inputs").iterdir()) == [
        "fame.attributes-1.json",
        "fame.attributes-2.json",
    ]
    (tmp_path / "here").rename(tmp_path / "there")  # the originals are gone from their path
    moved = ",".join(str(tmp_path / "there" / k.name) for k in kinds)

    other = tmp_path / "other.json"
    other.write_text(json.dumps({str(i): [i % 5] for i in range(1, 41)}))
    for asked in (f"{other},{tmp_path / 'there' / 'b.json'}", str(tmp_path / "there/a.json")):
        with pytest.raises(ConfigError, match="attributes .*not the same files"):
            resolve_config(out, {"fame.attributes": asked}, resume=True)

    resumed_config = resolve_config(out, {"fame.attributes": moved}, resume=True)
    shutil.rmtree(tmp_path / "there")  # the run reads its own copies
    resumed = train_run(resumed_config, out, resume=True, progress=False)
    assert resumed["test"] == whole["test"]
    assert json.loads((out / "config.json").read_text())["fame"]["attributes"] == moved

    out.rename(tmp_path / "elsewhere")
    items = torch.tensor([[0, 1, 2, 3]])
    with torch.no_grad():
        scores = load_run(tmp_path / "elsewhere").model.score(items)
        assert torch.equal(scores, load_run(tmp_path / "whole").model.score(items))
