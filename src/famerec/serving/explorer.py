"""The explorer page `famerec serve` answers at `GET /`: one self-contained HTML page (inline
CSS and JavaScript, nothing fetched from elsewhere) over the service's own JSON endpoints:
`GET /model`, `GET /user/{id}` (a known user's history) and `POST /recommend` with `explain`.

It shows a user's history (or a typed sequence), the integrated top-k and, for FAME, each
head's top-k with its gate weight and router weights as small bars; item names where the run
has an item table (`--items`), and their attributes (`GET /items`). Items in more than one
head's list are highlighted. For a known
user it holds out the last item by default (the test item of the leave-one-out split), asks
with the items before it, and marks where the held-out item stands in each list
(`?holdout=0`, or the box, keeps the whole history). For FAME, a second view charts
`GET /facets`: how concentrated each head's lists are in item attributes (`famerec explain
--facets`), beside the integrated and random lists. Every text from the data is set as text
(`textContent`), never as HTML.
"""

from __future__ import annotations

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>famerec explorer</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; margin: 0 0 .2em; }
#model { color: #555; margin-bottom: 1em; }
form { display: flex; flex-wrap: wrap; gap: .6em; align-items: end; margin-bottom: 1em; }
label { display: flex; flex-direction: column; font-size: .85em; color: #444; }
input[type=text] { font: inherit; padding: .25em .4em; }
#items { width: 22em; }
button { font: inherit; padding: .3em 1em; }
#error { color: #b00020; margin: .5em 0; }
.note { width: 100%; color: #555; }
#history { margin-bottom: 1em; }
#history span { display: inline-block; background: #f1f1f1; border-radius: 3px;
  padding: 0 .35em; margin: .1em; }
.lists { display: flex; flex-wrap: wrap; gap: 1em; }
.card { border: 1px solid #ddd; border-radius: 4px; padding: .6em; min-width: 16em; }
.card h2 { font-size: 1em; margin: 0 0 .4em; }
table { border-collapse: collapse; }
td { padding: .1em .4em; vertical-align: top; }
td.score { color: #666; text-align: right; }
td.attrs { color: #666; font-size: .85em; }
tr.shared td { background: #fff2b3; }
tr.held td { background: #c8ecc9; font-weight: 600; }
#history span.held { background: #c8ecc9; }
.bar { display: inline-block; height: .7em; background: #4a7fc1; vertical-align: middle; }
.track { display: inline-block; width: 6em; background: #e6e6e6; margin-right: .3em; }
.weights { margin-bottom: .4em; }
.weights div { font-size: .85em; color: #444; }
.weights .label { display: inline-block; width: 4.5em; }
#facets table { margin-top: .5em; }
#facets th { text-align: left; font-weight: 600; padding: .1em .4em; }
.bar.entropy { background: #c17a4a; }
</style>
</head>
<body>
<h1>famerec explorer</h1>
<div id="model">loading the model...</div>
<form id="ask">
  <label>user id <input type="text" id="user" placeholder="e.g. 230"></label>
  <label>or items (ids or names), oldest first
    <input type="text" id="items" placeholder="e.g. 12 7 315, or names split by ;"></label>
  <label>k <input type="text" id="k" value="10" size="3"></label>
  <label><span><input type="checkbox" id="seen"> keep seen items</span></label>
  <label><span><input type="checkbox" id="holdout" checked> hold out a user's last item</span>
  </label>
  <button type="submit" id="go">recommend</button>
  <button type="button" id="facets-button" hidden>facets of the heads</button>
</form>
<div id="error"></div>
<div id="history"></div>
<div class="lists" id="lists"></div>
<div id="facets"></div>
<script>
"use strict";
const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function bar(weight) {
  const track = el("span", null, "track");
  const fill = el("span", null, "bar");
  fill.style.width = Math.max(0, Math.min(1, weight)) * 100 + "%";
  track.appendChild(fill);
  return track;
}

async function getJson(url, options) {
  const response = await fetch(url, options);
  const body = await response.json();
  if (!response.ok) {
    const detail = body.detail;
    const message = Array.isArray(detail) ? detail.map((d) => d.msg).join("; ") : detail;
    throw new Error(message || response.statusText);
  }
  return body;
}

// Items in more than one head's list (as strings: ids may be numbers or text).
function sharedItems(heads) {
  const count = new Map();
  heads.forEach((head) => {
    new Set(head.items.map((entry) => String(entry.item))).forEach((item) => {
      count.set(item, (count.get(item) || 0) + 1);
    });
  });
  return new Set([...count].filter(([, n]) => n > 1).map(([item]) => item));
}

// "genre: Drama, Comedy; brand: Acme" from an item's attributes (GET /items), or "".
function attributeText(info) {
  if (!info || !info.attributes) return "";
  return Object.entries(info.attributes).map(([column, values]) =>
    column + ": " + values.join(", ")).join("; ");
}

// Names and attributes of the items of some lists, by id (as text); empty when unavailable.
async function itemInfo(lists) {
  const ids = [...new Set(lists.flat().map((entry) => String(entry.item)))];
  const info = new Map();
  if (!ids.length) return info;
  try {
    const query = ids.map((id) => "id=" + encodeURIComponent(id)).join("&");
    (await getJson("items?" + query)).items.forEach((e) => info.set(String(e.item), e));
  } catch (error) {
    // attributes are an extra: the lists stand without them
  }
  return info;
}

// Typed items, oldest first: ids, or names where the run has them. With a ";" in the text,
// items are split on ";" (names may hold spaces and commas), else on spaces and commas. A
// token that is no known id is looked up by name (the exact name first, else a unique match).
async function typedItems(text) {
  const tokens = (text.includes(";") ? text.split(";") : text.split(/[\\s,]+/))
    .map((t) => t.trim()).filter((t) => t);
  const known = await itemInfo([tokens.map((t) => ({ item: t }))]);
  const items = [];
  for (const token of tokens) {
    if (known.has(token)) {
      items.push(known.get(token).item);
      continue;
    }
    let found = [];
    try {
      found = (await getJson("items?name=" + encodeURIComponent(token))).items;
    } catch (error) {
      // no such name either: sent as typed, and reported back as unknown
    }
    if (found.length > 1) throw new Error("'" + token + "' names " + found.length + " items");
    items.push(found.length ? found[0].item : (/^-?[0-9]+$/.test(token) ? Number(token) : token));
  }
  return items;
}

function listCard(title, entries, weights, shared, held, info) {
  const card = el("div", null, "card");
  card.appendChild(el("h2", title));
  if (weights) card.appendChild(weights);
  const table = el("table");
  entries.forEach((entry, rank) => {
    const classes = [];
    if (shared.has(String(entry.item))) classes.push("shared");
    if (held !== null && String(entry.item) === String(held)) classes.push("held");
    const row = el("tr", null, classes.join(" ") || null);
    row.appendChild(el("td", rank + 1));
    row.appendChild(el("td", entry.item, "item"));
    row.appendChild(el("td", entry.name || "", "name"));
    row.appendChild(el("td", entry.score.toFixed(3), "score"));
    const attributes = attributeText(info && info.get(String(entry.item)));
    if (attributes) row.appendChild(el("td", attributes, "attrs"));
    table.appendChild(row);
  });
  card.appendChild(table);
  return card;
}

function headWeights(head) {
  const box = el("div", null, "weights");
  const gate = el("div");
  gate.appendChild(el("span", "gate", "label"));
  gate.appendChild(bar(head.gate));
  gate.appendChild(el("span", head.gate.toFixed(3)));
  box.appendChild(gate);
  head.experts.forEach((weight, index) => {
    const line = el("div");
    line.appendChild(el("span", "expert " + (index + 1), "label"));
    line.appendChild(bar(weight));
    line.appendChild(el("span", weight.toFixed(3)));
    box.appendChild(line);
  });
  return box;
}

function chipText(entry) {
  return entry.name ? entry.item + " " + entry.name : String(entry.item);
}

function showHistory(entries, held) {
  const box = $("history");
  box.replaceChildren(el("div", "history (" + entries.length + " items, oldest first):"));
  entries.forEach((entry) => box.appendChild(el("span", chipText(entry))));
  if (held) {
    box.appendChild(el("div", "held out (the user's last item):"));
    box.appendChild(el("span", chipText(held), "held"));
  }
}

// Where the held-out item stands in each list: "rank 3" or "not in its top-k".
function heldNote(held, lists) {
  const where = lists.map(([name, entries]) => {
    const rank = entries.findIndex((entry) => String(entry.item) === String(held.item));
    return name + ": " + (rank < 0 ? "not in its top-" + entries.length : "rank " + (rank + 1));
  });
  return "held-out item " + chipText(held) + ": " + where.join("; ");
}

async function ask(event) {
  if (event) event.preventDefault();
  $("error").textContent = "";
  $("lists").replaceChildren();
  try {
    let items;
    let held = null;
    const user = $("user").value.trim();
    if (user) {
      const found = await getJson("user/" + encodeURIComponent(user));
      let history = found.items;
      if ($("holdout").checked && history.length > 1) {
        held = history[history.length - 1];
        history = history.slice(0, -1);
      }
      items = history.map((entry) => entry.item);
      showHistory(history, held);
    } else {
      items = await typedItems($("items").value);
      if (!items.length) throw new Error("give a user id or some item ids or names");
      const named = await itemInfo([items.map((item) => ({ item: item }))]);
      showHistory(items.map((item) => named.get(String(item)) || { item: item }));
    }
    const k = Number($("k").value) || 10;
    const answer = await getJson("recommend", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        items: items, k: k, explain: true, exclude_seen: !$("seen").checked,
      }),
    });
    const lists = $("lists");
    if (answer.note) lists.appendChild(el("div", answer.note, "note"));
    const shared = sharedItems(answer.heads || []);
    if (shared.size) {
      lists.appendChild(el("div", "highlighted: in more than one head's list", "note"));
    }
    const heldId = held === null ? null : held.item;
    const info = await itemInfo([answer.items].concat((answer.heads || []).map((h) => h.items)));
    if (held !== null) {
      const named = [["integrated", answer.items]].concat(
        (answer.heads || []).map((head) => ["head " + head.head, head.items]));
      lists.appendChild(el("div", heldNote(held, named), "note held-note"));
    }
    lists.appendChild(listCard("integrated top-" + k, answer.items, null, shared, heldId, info));
    (answer.heads || []).forEach((head) => {
      const title = "head " + head.head + " (gate " + head.gate.toFixed(2) + ")";
      lists.appendChild(listCard(title, head.items, headWeights(head), shared, heldId, info));
    });
    if (answer.unknown && answer.unknown.length) {
      $("error").textContent = "skipped unknown ids: " + answer.unknown.join(" ");
    }
    document.body.dataset.state = "answered";
  } catch (error) {
    $("error").textContent = error.message;
    document.body.dataset.state = "error";
  }
}

// The facets view: per list, purity and entropy of the attributes of its top-k items (bars),
// the head's mean gate weight and the attributes over-represented in it.
async function showFacets() {
  const box = $("facets");
  const k = Number($("k").value) || 10;
  box.replaceChildren(el("div", "computing the facets report (top-" + k + ", 1000 test users)...",
    "note"));
  try {
    const report = await getJson("facets?k=" + k + "&users=1000");
    const lists = report.lists;
    const most = Math.max(...lists.map((row) => row.entropy), 1e-9);
    const table = el("table");
    const head = el("tr");
    ["list", "purity", "entropy", "mean gate", "over-represented attributes (lift)"]
      .forEach((name) => head.appendChild(el("th", name)));
    table.appendChild(head);
    lists.forEach((row) => {
      const line = el("tr", null, "facet");
      line.appendChild(el("td", row.list));
      const purity = el("td");
      purity.appendChild(bar(row.purity));
      purity.appendChild(el("span", row.purity.toFixed(3)));
      line.appendChild(purity);
      const entropy = el("td");
      const fill = bar(row.entropy / most);
      fill.firstChild.className = "bar entropy";
      entropy.appendChild(fill);
      entropy.appendChild(el("span", row.entropy.toFixed(3)));
      line.appendChild(entropy);
      line.appendChild(el("td", row.mean_gate === undefined ? "" : row.mean_gate.toFixed(3)));
      const top = (row.top_attributes || []).map((a) => a.attribute + " (x" + a.lift + ")");
      line.appendChild(el("td", top.join(", ")));
      table.appendChild(line);
    });
    box.replaceChildren(el("div", "attribute concentration of top-" + report.k + " lists over " +
      report.users + " test users (FAME, " + report.heads + " heads x " + report.experts +
      " experts); purity: share of items with the list's most common attribute; entropy: of " +
      "the attributes over the k items (lower = more concentrated)", "note"), table);
    document.body.dataset.facets = "shown";
  } catch (error) {
    box.replaceChildren(el("div", "facets: " + error.message, "note"));
    document.body.dataset.facets = "error";
  }
}

async function start() {
  try {
    const model = await getJson("model");
    $("model").textContent = model.model + " on " + (model.dataset.name || "its data") + ": " +
      model.items + " items, " + model.users + " users" +
      (model.names ? ", with item names" : "");
    if (model.explains) $("facets-button").hidden = false;
  } catch (error) {
    $("model").textContent = "cannot read the model: " + error.message;
  }
  $("ask").addEventListener("submit", ask);
  $("facets-button").addEventListener("click", showFacets);
  const query = new URLSearchParams(location.search);
  if (query.get("user")) $("user").value = query.get("user");
  if (query.get("items")) $("items").value = query.get("items");
  if (query.get("k")) $("k").value = query.get("k");
  if (query.get("holdout") === "0") $("holdout").checked = false;
  if (query.get("facets")) await showFacets();
  if (query.get("user") || query.get("items")) await ask();
  else document.body.dataset.state = "ready";
}
start();
</script>
</body>
</html>
"""
