// Sorting and filtering of the trial table; with `msh ui`, live updates and trial details.
"use strict";
let sortState = null; // [column, ascending]

function cellValue(row, column) {
  const text = row.children[column].textContent.trim();
  const number = parseFloat(text);
  return text !== "" && !isNaN(number) && /^[-\d.e+]+$/i.test(text) ? number : text.toLowerCase();
}

function applySort() {
  const table = document.getElementById("trials");
  if (!table || !sortState) return;
  const [column, ascending] = sortState;
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    const x = cellValue(a, column), y = cellValue(b, column);
    if (x === y) return 0;
    if (x === "") return 1;
    if (y === "") return -1;
    return (x < y ? -1 : 1) * (ascending ? 1 : -1);
  });
  rows.forEach((row) => body.appendChild(row));
  table.querySelectorAll("th").forEach((th, i) => {
    th.classList.toggle("asc", i === column && ascending);
    th.classList.toggle("desc", i === column && !ascending);
  });
}

function applyFilter() {
  const input = document.getElementById("filter");
  const table = document.getElementById("trials");
  if (!input || !table) return;
  const words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
  for (const row of table.tBodies[0].rows) {
    const text = row.textContent.toLowerCase();
    row.hidden = !words.every((w) => text.includes(w));
  }
}

document.addEventListener("click", (event) => {
  const th = event.target.closest("table.sortable th");
  if (th) {
    const column = Array.from(th.parentNode.children).indexOf(th);
    sortState = [column, !(sortState && sortState[0] === column && sortState[1])];
    applySort();
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
  if (event.target.id === "filter") applyFilter();
});

async function showTrial(id) {
  const response = await fetch("/trial/" + encodeURIComponent(id));
  const aside = document.getElementById("detail");
  aside.innerHTML = await response.text();
  aside.hidden = false;
}

// Waits for trials to finish (the server answers when one does, or after a while) and
// redraws the page, keeping the table's sort and filter.
async function follow() {
  for (;;) {
    try {
      const since = document.body.dataset.finished;
      const state = await (await fetch("/api/wait?finished=" + since)).json();
      if (String(state.finished) !== since) {
        const filter = document.getElementById("filter");
        const typed = filter ? filter.value : "";
        document.getElementById("report").innerHTML = await (await fetch("/fragment")).text();
        document.body.dataset.finished = String(state.finished);
        const again = document.getElementById("filter");
        if (again) again.value = typed;
        applySort();
        applyFilter();
      }
      if (state.ended) return;
    } catch (e) {
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }
}

if (document.body.dataset.live === "true") follow();
