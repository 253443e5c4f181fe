// lstv review: one key per study. The queue file is the state; every verdict is saved at once
// with the token of the file this page last read, and a refusal (the file changed) is shown.
"use strict";

const VERDICT_KEYS = { n: "normal", s: "sacralization", l: "lumbarization", u: "unsure" };
const state = { rows: [], token: null, current: 0, undo: [], reviewer: "" };
const $ = (id) => document.getElementById(id);
const viewer = new StudyViewer($("view"), $("caption"));
bindControls(viewer, $("level"), $("opacity"));

const verdictOf = (row) => row.verdict || "";
const TRANSITIONAL = ["sacralization", "lumbarization", "lstv"];

function message(text, ok) {
  const m = $("message");
  m.textContent = text || "";
  m.classList.toggle("ok", Boolean(ok));
}

async function loadQueue() {
  const r = await fetch("api/queue", { cache: "no-store" });
  const q = await r.json();
  if (!r.ok) { message(q.error); return; }
  state.rows = q.rows;
  state.token = q.token;
  state.reviewer = q.reviewer;
  $("commands").textContent = q.commands.join("\n");
  renderQueue();
}

function renderQueue() {
  const list = $("queue");
  list.replaceChildren();
  state.rows.forEach((row, i) => {
    const li = document.createElement("li");
    li.dataset.study = row.study_id;
    if (i === state.current) li.classList.add("current");
    const rank = document.createElement("span");
    rank.textContent = row.rank;
    const id = document.createElement("span");
    id.textContent = row.study_id;
    const tag = document.createElement("span");
    const v = verdictOf(row);
    tag.className = "tag " + v;
    tag.textContent = v || "—";
    li.append(rank, id, tag);
    li.addEventListener("click", () => select(i));
    list.append(li);
  });
  const done = state.rows.filter((r) => r.verdict);
  const lstv = done.filter((r) => TRANSITIONAL.includes(r.verdict)).length;
  const unsure = done.filter((r) => r.verdict === "unsure").length;
  $("progress").textContent =
    `${done.length}/${state.rows.length} reviewed, ${lstv} LSTV, ${unsure} unsure`;
  $("done").hidden = done.length < state.rows.length;
  list.children[state.current]?.scrollIntoView({ block: "nearest" });
}

function fact(dl, name, value) {
  const dt = document.createElement("dt"), dd = document.createElement("dd");
  dt.textContent = name;
  dd.textContent = value;
  dl.append(dt, dd);
}

function renderStudy(row, meta) {
  $("study-title").textContent = `Study ${row.study_id} (rank ${row.rank})`;
  for (const b of document.querySelectorAll(".verdicts button")) {
    b.classList.toggle("chosen", b.dataset.verdict === verdictOf(row));
  }
  $("saved").textContent = row.verdict ? `saved: ${verdictOf(row)} by ${row.reviewer || "—"}` : "";
  $("note").value = row.notes || "";
  const score = $("score");
  score.replaceChildren();
  const p = meta && meta.primary, seed = meta && meta.seed;
  if (meta && meta.blind) {
    score.textContent = "hidden until you give a verdict";
  } else if (meta) {
    const line = (text, cls) => {
      const el = document.createElement("p");
      el.textContent = text;
      if (cls) el.className = cls;
      score.append(el);
    };
    if (p) {
      line(`${p.label}: ${p.score.toFixed(2)} — ${p.flag ? "flagged" : "not flagged"}`,
        "primary " + (p.flag ? "flagged" : "notflagged"));
      if (p.reason) line(`Why: ${p.reason}`);
    }
    if (seed) {
      line(`${seed.label}: ${seed.risk}` + (seed.entropy === null ? "" :
        ` (L5/S1 entropy ${seed.entropy.toFixed(2)}; ${seed.rule})`), p ? "muted" : "primary");
    }
    for (const n of meta.notes) line(n, "muted");
  }
  const dl = $("series");
  dl.replaceChildren();
  fact(dl, "Series", `${row.series_id}${meta && meta.description ? " · " + meta.description : ""}`);
  if (meta && meta.selection_why) fact(dl, "Chosen as", meta.selection_why);
  if (meta) fact(dl, "Shown from", meta.source);
  fact(dl, "Study UID", row.study_instance_uid || "—");
  fact(dl, "Path", row.path || "—");
}

async function select(i) {
  if (!state.rows.length) return;
  state.current = Math.max(0, Math.min(state.rows.length - 1, i));
  renderQueue();
  const row = state.rows[state.current];
  renderStudy(row, null);
  $("caption").textContent = `loading study ${row.study_id}…`;
  try {
    const shown = await viewer.load(`api/study/${encodeURIComponent(row.study_id)}`);
    if (shown && state.rows[state.current] === row) renderStudy(row, viewer.meta);
  } catch (err) {
    message(`study ${row.study_id}: ${err.message}`);
  }
}

async function save(row, verdict, notes, reviewer) {
  const r = await fetch("api/review", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ study_id: row.study_id, verdict, notes, reviewer, token: state.token }),
  });
  const body = await r.json();
  if (!r.ok) { message(body.error); return false; }
  state.token = body.token;
  row.verdict = verdict;
  row.reviewer = reviewer;
  row.notes = notes;
  message("");
  return true;
}

async function verdict(v) {
  const row = state.rows[state.current];
  const before = { verdict: verdictOf(row), notes: row.notes || "", reviewer: row.reviewer || "" };
  if (!(await save(row, v, $("note").value, state.reviewer))) return;
  state.undo.push({ index: state.current, ...before });
  const next = state.rows.findIndex((r, i) => i > state.current && !r.verdict);
  await select(next === -1 ? state.current + 1 : next);
}

async function undo() {
  const last = state.undo.pop();
  if (!last) { message("nothing to undo"); return; }
  const row = state.rows[last.index];
  if (await save(row, last.verdict, last.notes, last.reviewer)) {
    await select(last.index);
    message(`undone: study ${row.study_id} is back to ${last.verdict || "not reviewed"}`, true);
  } else {
    state.undo.push(last);
  }
}

document.addEventListener("keydown", async (e) => {
  if (typing(e)) {
    if (e.key === "Escape") e.target.blur();
    return;
  }
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const k = e.key.toLowerCase();
  if (viewerKey(viewer, e)) { e.preventDefault(); return; }
  if (k in VERDICT_KEYS) { e.preventDefault(); await verdict(VERDICT_KEYS[k]); }
  else if (k === "j") { e.preventDefault(); await select(state.current + 1); }
  else if (k === "k") { e.preventDefault(); await select(state.current - 1); }
  else if (k === "z") { e.preventDefault(); await undo(); }
  else if (k === "/") { e.preventDefault(); $("note").focus(); }
});

for (const b of document.querySelectorAll(".verdicts button")) {
  b.addEventListener("click", () => verdict(b.dataset.verdict));
}

// A note typed on a study that already has a verdict is saved when the field is left.
$("note").addEventListener("change", async () => {
  const row = state.rows[state.current];
  if (row && row.verdict) await save(row, verdictOf(row), $("note").value, row.reviewer);
});

loadQueue().then(() => {
  const first = state.rows.findIndex((r) => !r.verdict);
  return select(first === -1 ? 0 : first);
});
