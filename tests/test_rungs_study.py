"""studies/rungs.py replays the runner's successive halving on finished trials' logs."""

from studies.rungs import Stage, replay, spearman


def curve(scores: list[float]) -> list[dict]:
    return [{"epoch": e, "valid": {"NDCG@10": s}} for e, s in enumerate(scores, start=1)]


def test_a_slow_starter_is_lost_at_an_early_rung_and_kept_at_a_late_one():
    logs = {
        "slow": curve([0.01, 0.02, 0.08, 0.09]),  # the winner: last at epoch 1, first from 3
        "fast": curve([0.04, 0.06, 0.07, 0.07]),
        "flat": curve([0.03, 0.03, 0.03, 0.03]),
    }
    stage = Stage(
        "s", logs, {run_id: max(e["valid"]["NDCG@10"] for e in log) for run_id, log in logs.items()}
    )
    assert stage.winner == "slow"

    kept, regret, share = replay(stage, (1,), 3)  # one of three goes on after epoch 1: "fast"
    assert not kept
    assert abs(regret - 100 * (0.09 - 0.07) / 0.09) < 1e-9
    assert share == (4 + 1 + 1) / 12

    kept, regret, share = replay(stage, (3,), 3)
    assert kept and regret == 0 and share == (4 + 3 + 3) / 12


def test_spearman_of_rankings():
    assert spearman([1, 2, 3], [10, 20, 30]) == 1.0
    assert spearman([1, 2, 3], [30, 20, 10]) == -1.0
