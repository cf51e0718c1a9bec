// The trial table: every trial is in the page's JSON; the table shows a page of it at a
// time, sorted and filtered across all of them. The view is kept in the address's
// `#sort=objective&order=desc&page=2&filter=word`, so that it can be shared. With `msh
// ui`, the page follows the run: each poll brings only the trials that changed.
"use strict";
const PAGE = 100;
const COLUMNS = ["id", "stage", "status", "objective", "test", "parameters", "epochs", "seconds", "parent", "architecture"];
// Each row: the columns above, then a note (why it failed, or who held a stale trial).
let rows = [];
let byId = new Map();
let view = [];
let sortState = null; // [column, ascending]
let page = 0;
let filterWords = [];

function load() {
  const data = document.getElementById("trial-data");
  if (!data) return false;
  rows = JSON.parse(data.textContent);
  byId = new Map(rows.map((row, i) => [row[0], i]));
  return true;
}

function cellText(row, column) {
  const value = row[column];
  if (value === null) return "";
  if (column === 3 || column === 4) return value.toFixed(4);
  if (column === 7) return value.toFixed(1);
  return String(value);
}

function compare(column, ascending) {
  return (a, b) => {
    const x = a[column], y = b[column];
    if (x === y) return a[0] - b[0];
    // Empty cells last, whichever the direction.
    if (x === null || x === "") return 1;
    if (y === null || y === "") return -1;
    const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
    return (ascending ? order : -order) || a[0] - b[0];
  };
}

// A row's cells as one lower-case text (what the filter searches), kept on the row.
function rowText(row) {
  if (row.text === undefined) {
    row.text = COLUMNS.map((_, i) => cellText(row, i)).join(" ").toLowerCase();
  }
  return row.text;
}

// Recomputes which rows show, in which order; `keepPage` stays on the page shown.
function applyView(keepPage) {
  view = filterWords.length ? rows.filter((row) => filterWords.every((w) => rowText(row).includes(w))) : rows.slice();
  if (sortState) view.sort(compare(sortState[0], sortState[1]));
  const pages = Math.max(1, Math.ceil(view.length / PAGE));
  page = keepPage ? Math.min(page, pages - 1) : 0;
  render();
}

function render() {
  const table = document.getElementById("trials");
  if (!table) return;
  const body = document.createElement("tbody");
  for (const row of view.slice(page * PAGE, (page + 1) * PAGE)) {
    const tr = document.createElement("tr");
    tr.dataset.id = row[0];
    tr.className = row[2];
    if (row[COLUMNS.length]) tr.title = row[COLUMNS.length];
    for (let c = 0; c < COLUMNS.length; c++) {
      const td = document.createElement("td");
      td.textContent = cellText(row, c);
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
  table.replaceChild(body, table.tBodies[0]);
  table.querySelectorAll("th").forEach((th, i) => {
    th.classList.toggle("asc", !!sortState && i === sortState[0] && sortState[1]);
    th.classList.toggle("desc", !!sortState && i === sortState[0] && !sortState[1]);
  });
  const pages = Math.max(1, Math.ceil(view.length / PAGE));
  const first = view.length ? page * PAGE + 1 : 0;
  const last = Math.min(view.length, (page + 1) * PAGE);
  const where = document.getElementById("page");
  if (where) where.textContent = `trials ${first}-${last} of ${view.length} (page ${page + 1} of ${pages})`;
  const prev = document.getElementById("prev"), next = document.getElementById("next");
  if (prev) prev.disabled = page === 0;
  if (next) next.disabled = page >= pages - 1;
  saveState();
}

function saveState() {
  const state = new URLSearchParams();
  if (sortState) {
    state.set("sort", COLUMNS[sortState[0]]);
    state.set("order", sortState[1] ? "asc" : "desc");
  }
  if (page > 0) state.set("page", String(page + 1));
  if (filterWords.length) state.set("filter", filterWords.join(" "));
  const hash = state.toString();
  if (hash !== location.hash.slice(1)) history.replaceState(null, "", hash ? "#" + hash : location.pathname);
}

function readState() {
  const state = new URLSearchParams(location.hash.slice(1));
  const column = COLUMNS.indexOf(state.get("sort"));
  sortState = column >= 0 ? [column, state.get("order") !== "desc"] : null;
  filterWords = (state.get("filter") || "").toLowerCase().split(/\s+/).filter(Boolean);
  const input = document.getElementById("filter");
  if (input) input.value = filterWords.join(" ");
  applyView(false);
  page = Math.max(0, Math.min(parseInt(state.get("page") || "1", 10) - 1, Math.ceil(view.length / PAGE) - 1)) || 0;
  render();
}

document.addEventListener("click", (event) => {
  const th = event.target.closest("table.sortable th");
  if (th) {
    const column = Array.from(th.parentNode.children).indexOf(th);
    sortState = [column, !(sortState && sortState[0] === column && sortState[1])];
    applyView(false);
    return;
  }
  if (event.target.id === "prev" || event.target.id === "next") {
    page += event.target.id === "next" ? 1 : -1;
    applyView(true);
    return;
  }
  if (event.target.id === "close") {
    document.getElementById("detail").hidden = true;
    return;
  }
  const row = event.target.closest("#trials tbody tr");
  if (row && document.body.dataset.live === "true") showTrial(row.dataset.id);
});

document.addEventListener("input", (event) => {
  if (event.target.id !== "filter") return;
  filterWords = event.target.value.toLowerCase().split(/\s+/).filter(Boolean);
  applyView(false);
});

async function showTrial(id) {
  const response = await fetch("/trial/" + encodeURIComponent(id));
  const aside = document.getElementById("detail");
  aside.innerHTML = await response.text();
  aside.hidden = false;
}

// Trials that changed, in the table's row format: replaced by id, new ones added.
function merge(changed) {
  for (const row of changed) {
    const at = byId.get(row[0]);
    if (at === undefined) {
      byId.set(row[0], rows.length);
      rows.push(row);
    } else {
      rows[at] = row;
    }
  }
  applyView(true);
}

// Redraws the plots (the sections the server sends), leaving the table as it is.
async function refreshPlots() {
  const template = document.createElement("template");
  template.innerHTML = await (await fetch("/fragment")).text();
  for (const section of template.content.querySelectorAll("section[id]")) {
    const old = document.getElementById(section.id);
    if (old) old.replaceWith(section);
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Long-polls `/api/wait`: the server answers when trials finish (or after a while) with
// the rows that changed since the position the page holds, the stage counters and the
// run's summary; the plots are redrawn at most every 10 seconds, and when the run ends.
async function follow() {
  let plotsDrawn = Date.now();
  let plotsBehind = false;
  for (;;) {
    try {
      const since = document.body.dataset.position;
      const state = await (await fetch("/api/wait?since=" + since)).json();
      if (state.rows.length) merge(state.rows);
      const header = document.querySelector("#report > header");
      if (header && state.summary) header.outerHTML = state.summary;
      if (String(state.position) !== since) plotsBehind = true;
      document.body.dataset.position = String(state.position);
      document.body.dataset.finished = String(state.finished);
      if (plotsBehind && (state.ended || Date.now() - plotsDrawn > 10000)) {
        await refreshPlots();
        plotsDrawn = Date.now();
        plotsBehind = false;
      }
      if (state.ended) return;
      // At most one poll a second, however fast trials finish.
      await sleep(1000);
    } catch (e) {
      await sleep(2000);
    }
  }
}

if (load()) readState();
if (document.body.dataset.live === "true") follow();
