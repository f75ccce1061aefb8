"""The explorer page at GET /: self-contained, over the service's own endpoints; and, where
Debian's chromium is installed, what a headless browser shows after it has asked them."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from famerec.recommender import load
from famerec.serving import create_app
from tests.test_item_names import named_run  # noqa: F401  (a module-scoped fixture)
from tests.test_serving import serving_in_thread

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_the_page_is_self_contained(trained_runs):
    with serving_in_thread(create_app(load(trained_runs["fame"]))) as client:
        page = client.get("/")
        model = client.get("/model").json()
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "<script>" in html and "<style>" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # nothing fetched
    assert not re.search(r"https?://", html)
    assert "innerHTML" not in html  # data is set as text, never as markup
    for endpoint in ('"model"', '"user/"', '"recommend"'):
        assert endpoint in html
    assert model["names"] is False


def test_user_endpoint(named_run, trained_runs):  # noqa: F811
    with serving_in_thread(create_app(load(named_run))) as client:
        named = client.get("/user/u1").json()
        unknown = client.get("/user/nobody")
    assert named["user"] == "u1"
    assert named["items"][0] == {"item": "i1", "name": "Item 1, deluxe"}
    assert unknown.status_code == 422 and "unknown user" in unknown.json()["detail"]
    with serving_in_thread(create_app(load(trained_runs["fame"]))) as client:
        plain = client.get("/user/u7").json()
    assert plain["items"] and all(set(entry) == {"item"} for entry in plain["items"])


def test_facets_endpoint_is_explain_facets(named_run, trained_runs):  # noqa: F811
    from famerec.analysis import attribute_matrix_for, facet_report
    from famerec.runs.load import load_run

    run = load_run(named_run)
    expected = facet_report(run, attribute_matrix_for(run), k=3, max_users=50)
    with serving_in_thread(create_app(load(named_run), batch_wait_ms=0)) as client:
        assert client.get("/model").json()["explains"] is True
        answer = client.get("/facets", params={"k": 3, "users": 50})
        again = client.get("/facets", params={"k": 3, "users": 50})
        too_many = client.get("/facets", params={"k": 1000})
    assert answer.status_code == 200 and answer.json() == again.json()
    assert answer.json()["lists"] == expected["lists"]  # the same numbers as the CLI's report
    assert [row["list"] for row in answer.json()["lists"]] == [
        "head 1",
        "head 2",
        "integrated",
        "random",
    ]
    assert too_many.status_code == 422
    with serving_in_thread(create_app(load(trained_runs["sasrec"]))) as client:
        assert client.get("/model").json()["explains"] is False
        plain = client.get("/facets")
    assert plain.status_code == 422 and "(FAME); this is sasrec" in plain.json()["detail"]


def test_items_endpoint_gives_names_and_attributes(named_run, trained_runs):  # noqa: F811
    import json

    kept = json.loads((named_run / "items.json").read_text())
    with serving_in_thread(create_app(load(named_run), batch_wait_ms=0)) as client:
        answer = client.get("/items", params={"id": ["i0", "i3", "nope"]}).json()["items"]
        spelled = client.get("/items", params={"id": ["i0"]}).json()["items"]
    assert [entry["item"] for entry in answer] == ["i0", "i3"]  # unknown ids left out
    for entry in answer:
        assert entry["name"] == kept["names"][entry["item"]]
        expected = {
            column: [kind["values"][i] for i in kind["items"][entry["item"]]]
            for column, kind in kept["attributes"].items()
            if kind["items"].get(entry["item"])
        }
        assert entry.get("attributes", {}) == expected
    assert "genre" not in answer[1].get("attributes", {})  # i3 has no genre
    assert spelled == answer[:1]
    with serving_in_thread(create_app(load(trained_runs["fame"]))) as client:
        plain = client.get("/items", params={"id": ["i1"]}).json()["items"]
    assert plain == [{"item": "i1"}]  # no item table: ids alone


def dump_dom(url: str) -> str:
    """The page's DOM once its scripts have run (chromium's --dump-dom waits for the load
    event and the fetches that follow, bounded by the virtual time budget)."""
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--virtual-time-budget=10000",
        "--dump-dom",
        url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_a_browser_shows_history_heads_and_names(named_run):  # noqa: F811
    with serving_in_thread(create_app(load(named_run), batch_wait_ms=0)) as client:
        url = str(client.base_url)
        dom = dump_dom(url + "/?user=u1&k=3")
        whole = dump_dom(url + "/?user=u1&k=3&holdout=0")
        typed = dump_dom(url + "/?items=i1%20i2&k=2")
        by_name = dump_dom(url + "/?items=item%201,%20deluxe;%20i2&k=2")
        exact = client.get("/items", params={"name": "ITEM 1, DELUXE"}).json()["items"]
        partial = client.get("/items", params={"name": "deluxe"}).json()["items"]
        history = [entry["item"] for entry in client.get("/user/u1").json()["items"]]
        # by default the page holds out the user's last item and asks with the ones before
        asked = {"items": history[:-1], "k": 3, "explain": True, "exclude_seen": True}
        answer = client.post("/recommend", json=asked).json()
    # items in more than one head's list are highlighted, in every list they appear in
    head_lists = [{entry["item"] for entry in head["items"]} for head in answer["heads"]]
    shared = {item for items in head_lists for item in items}
    shared = {item for item in shared if sum(item in items for items in head_lists) > 1}
    lists = [answer["items"], *(head["items"] for head in answer["heads"])]
    highlighted = sum(e["item"] in shared for lst in lists for e in lst)
    assert len(re.findall(r'<tr class="shared( held)?"', dom)) == highlighted, (shared, dom)
    assert 'data-state="answered"' in dom, dom[-2000:]
    # the held-out item: marked in every list it is in, and its rank in each said in words
    held = history[-1]
    ranks = [
        [e["item"] for e in lst].index(held) + 1 if held in [e["item"] for e in lst] else 0
        for lst in lists
    ]
    assert len(re.findall(r'<tr class="(shared )?held"', dom)) == sum(r > 0 for r in ranks)
    words = ["rank " + str(r) if r else "not in its top-3" for r in ranks]
    names = ["integrated"] + [f"head {head['head']}" for head in answer["heads"]]
    said = "; ".join(f"{name}: {word}" for name, word in zip(names, words))
    assert f"held-out item {held} " in dom and said in dom, dom[-3000:]
    assert "history (5 items, oldest first):" in dom and 'class="held"' in dom
    # attributes beside the names, from GET /items
    assert re.search(r'<td class="attrs">(genre|brand): [^<]+</td>', dom), dom[-3000:]
    assert (
        "history (6 items, oldest first):" in whole
        and "held-note"
        not in whole.split("<body")[1].split("<script")[0] + whole.split("</script>")[-1]
    )
    assert "i1 Item 1, deluxe" in dom  # the history, named
    assert "integrated top-3" in dom
    assert dom.count('class="card"') == 3  # integrated, head 1, head 2
    assert "head 1 (gate" in dom and "head 2 (gate" in dom
    assert (
        len(re.findall(r'class="label">expert \d+<', dom)) == 2 * 4
    )  # router weights: 4 experts a head
    assert dom.count('class="bar"') == 2 * (1 + 4)  # a bar for each gate and router weight
    assert re.search(r'class="name">Item \d+, deluxe<', dom)
    assert "fame on events" in dom and "with item names" in dom
    assert 'data-state="answered"' in typed and "integrated top-2" in typed
    # items typed by name (any case; ";" between items, as names hold commas) or by id
    assert [e["item"] for e in exact] == ["i1"] and len(partial) > 1
    assert 'data-state="answered"' in by_name, by_name[-2000:]
    assert "history (2 items, oldest first):" in by_name and "i1 Item 1, deluxe" in by_name


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_a_browser_shows_the_facets_view(named_run):  # noqa: F811
    with serving_in_thread(create_app(load(named_run), batch_wait_ms=0)) as client:
        dom = dump_dom(str(client.base_url) + "/?facets=1&k=3")
        report = client.get("/facets", params={"k": 3, "users": 1000}).json()
    assert 'data-facets="shown"' in dom, dom[-2000:]
    assert "attribute concentration of top-3 lists over" in dom
    rows = re.findall(r'<tr class="facet"><td>([^<]+)</td>', dom)
    assert rows == [row["list"] for row in report["lists"]]
    first = report["lists"][0]
    assert f"{first['purity']:.3f}" in dom and f"{first['mean_gate']:.3f}" in dom
