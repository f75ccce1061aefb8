"""Queries follow the data's id rules: in a run on integer item ids, an id is the integer or its
plain spelling (as the data files must write it), never True, 1.0, "001" or "+1"; and data
with nothing to rank is refused before anything is written."""

from __future__ import annotations

import numpy as np
import pytest

import famerec
from famerec.cli import main
from famerec.errors import FamerecError
from famerec.serving import create_app
from tests.conftest import write_sequences
from tests.test_cli import assert_one_line_error
from tests.test_serving import serving_in_thread

FLAGS = ["--hidden", "64", "--max-len", "10", "--epochs", "1", "--batch-size", "32"]
FLAGS += ["--threads", "1"]
# Each of these would have become item 1 (or user 1); the data files refuse them all.
ALIASES = [
    ("001", "'001' is not a plain integer id (write 1"),
    ("+1", "'+1' is not a plain integer id (write 1"),
    (" 1", "' 1' is not a plain integer id (write 1"),
    ("1_0", "'1_0' is not a plain integer id (write 10"),
    ("１", "is not a plain integer id (write 1"),
    (True, "True (true/false) is not an id"),
    (1.0, "1.0 (float) is not an id"),
    (np.float64(1.0), "(float64) is not an id"),
    (None, "None (NoneType) is not an id"),
    (2**64, "integer id 18446744073709551616 does not fit in 64 bits"),
]


@pytest.fixture(scope="module")
def integer_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("integer-ids")
    data = write_sequences(root / "ints.txt", num_users=40, num_items=20)
    out = root / "run"
    fame = ["--model", "fame", "--heads", "2", "--experts", "2"]  # explain explains FAME runs
    assert main(["-q", "train", "--data", str(data), "--out", str(out), *FLAGS, *fame]) == 0
    return out


@pytest.fixture(scope="module")
def recommender(integer_run):
    return famerec.load(integer_run)


@pytest.mark.parametrize("alias, words", ALIASES)
@pytest.mark.parametrize("strict", [False, True])
def test_an_integer_run_refuses_other_spellings_of_an_id(recommender, alias, words, strict):
    for ask in (recommender.recommend, recommender.explain):
        with pytest.raises(FamerecError) as error:
            ask([2, alias], k=3, strict=strict)
        message = str(error.value)
        assert message.startswith("item ") and words in message and "\n" not in message


def test_the_integer_and_its_plain_spelling_still_work(recommender):
    expected = recommender.recommend([1, 2], k=3).items
    assert recommender.recommend(["1", "2"], k=3).items == expected
    assert recommender.recommend([np.int64(1), np.int32(2)], k=3).items == expected
    assert recommender.recommend([-5, 1, 2], k=3).unknown == [-5]  # an id the data has not
    result = recommender.recommend(["abc", 1, 2], k=3)  # text that is no integer: unknown
    assert result.unknown == ["abc"] and result.items == expected


def test_answer_each_reports_the_bad_query_alone(recommender):
    from famerec.serving.recommender import Query

    answers = recommender.answer_each([Query(["001"]), Query([1, 2])])
    assert isinstance(answers[0], FamerecError) and "'001'" in str(answers[0])
    assert answers[1].items == recommender.recommend([1, 2]).items


@pytest.mark.parametrize("spelling", ["001 2", "+1 2", "2,001"])
@pytest.mark.parametrize("strict", [[], ["--strict"]])
def test_cli_recommend_refuses_them(integer_run, capsys, spelling, strict):
    code = main(["recommend", "--run", str(integer_run), "--items", spelling, *strict])
    assert_one_line_error(code, capsys.readouterr().err, "is not a plain integer id")


def test_cli_recommend_and_explain_refuse_a_user_spelled_otherwise(integer_run, capsys):
    code = main(["recommend", "--run", str(integer_run), "--user", "007"])
    assert_one_line_error(code, capsys.readouterr().err, "user '007' is not a plain integer id")
    assert main(["recommend", "--run", str(integer_run), "--user", "7"]) == 0
    capsys.readouterr()
    code = main(["explain", "--run", str(integer_run), "--user", "+7"])
    assert_one_line_error(code, capsys.readouterr().err, "user '+7' is not a plain integer id")


def test_the_service_refuses_them_in_one_line(recommender):
    with serving_in_thread(create_app(recommender, batch_wait_ms=0)) as client:
        for body in ({"items": ["001", 2]}, {"items": ["+1"], "strict": True}):
            response = client.post("/recommend", json=body)
            assert response.status_code == 422
            detail = response.json()["detail"]
            assert "is not a plain integer id" in detail and "\n" not in detail
        response = client.post("/recommend/batch", json={"sequences": [[1, 2], ["001"]]})
        assert response.status_code == 422 and "'001'" in response.json()["detail"]
        assert client.get("/user/007").status_code == 422
        fine = client.post("/recommend", json={"items": ["1", 2], "k": 3})
        assert fine.status_code == 200
        assert [i["item"] for i in fine.json()["items"]] == recommender.recommend([1, 2], k=3).items


def test_a_one_item_catalog_is_nothing_to_rank(tmp_path, capsys):
    """Before: it trained, exit 0, every metric 0."""
    data = tmp_path / "one.txt"
    data.write_text("".join(f"{user} 7 7 7 7 7\n" for user in range(1, 30)))
    out = tmp_path / "run"
    code = main(["-q", "train", "--data", str(data), "--out", str(out), *FLAGS])
    assert_one_line_error(code, capsys.readouterr().err, "has 1 item: nothing to rank")
    assert not out.exists()
    with pytest.raises(FamerecError, match="nothing to rank"):
        famerec.train(data={u: [7] * 5 for u in range(30)}, out=tmp_path / "py", quiet=True)
    assert not (tmp_path / "py").exists()  # nothing written
