// PaNReduce live data page: live tables (server-sent events) and result plots (Plotly,
// served by this component). Data is put into the page with textContent only.
"use strict";

function cell(text) { const td = document.createElement("td"); td.textContent = text == null ? "" : String(text); return td; }

function jobRow(r) {
  const tr = document.createElement("tr");
  tr.dataset.id = r.id;
  const first = document.createElement("td");
  const a = document.createElement("a");
  a.href = "/jobs/" + encodeURIComponent(r.id);
  a.textContent = r.id;
  first.appendChild(a);
  tr.appendChild(first);
  for (const key of ["technique", "sample", "title", "state", "progress", "created", "started", "finished", "owner", "proposal"]) {
    if (key === "progress") {
      const td = document.createElement("td");
      const p = document.createElement("progress");
      p.max = 100; p.value = Math.round(100 * r.progress);
      td.appendChild(p);
      td.appendChild(document.createTextNode(" " + Math.round(100 * r.progress) + "%"));
      tr.appendChild(td);
    } else {
      const td = cell(r[key]);
      if (key === "state") td.className = "state " + String(r.state).toLowerCase();
      tr.appendChild(td);
    }
  }
  return tr;
}

function liveList() {
  const table = document.getElementById("jobs");
  if (!table || !table.dataset.live) return;
  const source = new EventSource(table.dataset.live);
  source.addEventListener("jobs", (ev) => {
    const doc = JSON.parse(ev.data);
    const body = table.tBodies[0];
    body.replaceChildren(...doc.jobs.map(jobRow));
    const empty = document.getElementById("empty");
    if (empty) empty.hidden = doc.jobs.length > 0;
    table.dataset.updated = String(Date.now());
  });
  source.addEventListener("end", () => source.close());
}

function liveJob() {
  const list = document.getElementById("events");
  if (!list || !list.dataset.live) return;
  const source = new EventSource(list.dataset.live);
  source.addEventListener("job", (ev) => {
    const d = JSON.parse(ev.data);
    const li = document.createElement("li");
    li.className = d.kind;
    let text = d.message || "";
    if (d.kind === "progress") {
      text = (d.stage || "") + " " + Math.round(100 * d.fraction) + "% " + text;
      const p = document.getElementById("progress");
      if (p) p.value = Math.round(100 * d.fraction);
      const stage = document.getElementById("stage");
      if (stage) stage.textContent = d.stage || "";
    }
    li.textContent = (d.time || "") + " " + d.kind + ": " + text;
    list.appendChild(li);
  });
  source.addEventListener("state", (ev) => {
    const d = JSON.parse(ev.data);
    const state = document.getElementById("state");
    if (state) { state.textContent = d.state; state.className = "state " + d.state.toLowerCase(); }
    source.close();
    if (d.state === "SUCCEEDED" || d.state === "FAILED" || d.state === "CANCELLED") window.location.reload();
  });
  source.addEventListener("error", () => {});
}

function draw(container, base, fig) {
  const box = document.createElement("div");
  box.className = "figure";
  box.dataset.kind = fig.kind;
  const h = document.createElement("h3");
  h.textContent = fig.title || "";
  box.appendChild(h);
  const plot = document.createElement("div");
  plot.className = "plot";
  box.appendChild(plot);
  container.appendChild(box);
  if (fig.kind === "error") { const p = document.createElement("p"); p.textContent = fig.error; box.appendChild(p); return; }
  window.Plotly.newPlot(plot, fig.data, Object.assign({margin: {t: 40}, height: 380}, fig.layout), {responsive: true});
  const url = (extra) => base + "?" + new URLSearchParams(Object.assign({group: fig.group || ""}, extra)).toString();
  if (fig.kind === "stack") {
    const label = document.createElement("label");
    label.textContent = "slice ";
    const slider = document.createElement("input");
    slider.type = "range"; slider.min = 0; slider.max = fig.slices - 1; slider.value = fig.slice;
    slider.className = "slice";
    const shown = document.createElement("span");
    shown.textContent = String(fig.slice);
    slider.addEventListener("change", async () => {
      const doc = await (await fetch(url({slice: slider.value}), {credentials: "same-origin"})).json();
      if (doc.figures.length) { window.Plotly.react(plot, doc.figures[0].data, plot.layout); shown.textContent = slider.value; box.dataset.slice = slider.value; }
    });
    label.appendChild(slider); label.appendChild(shown);
    box.appendChild(label);
  }
  if (fig.decimated || fig.kind === "image" || fig.kind === "complex") {
    const b = document.createElement("button");
    b.textContent = "full data";
    b.className = "full";
    b.addEventListener("click", async () => {
      const doc = await (await fetch(url({full: "1"}), {credentials: "same-origin"})).json();
      if (doc.figures.length) window.Plotly.react(plot, doc.figures[0].data, plot.layout);
    });
    box.appendChild(b);
  }
}

async function plots() {
  for (const container of document.querySelectorAll("[data-plots]")) {
    const base = container.dataset.plots;
    try {
      const resp = await fetch(base, {credentials: "same-origin"});
      const doc = await resp.json();
      for (const fig of doc.figures || []) draw(container, base, fig);
      container.dataset.figures = String((doc.figures || []).length);
      container.dataset.state = "ready";
    } catch (err) {
      container.dataset.state = "error";
      container.textContent = "no view: " + err;
    }
  }
}

document.addEventListener("DOMContentLoaded", () => { liveList(); liveJob(); plots(); });
