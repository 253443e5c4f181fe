// The web demo: drag and drop or choose files, or run the example study; the result is shown
// in the shared study viewer beside its verdict and which series was analysed.
"use strict";

const $ = (id) => document.getElementById(id);
const viewer = new StudyViewer($("view"), $("caption"));
bindControls(viewer, $("level"), $("opacity"));
$("caption").textContent = "no study yet";

function line(parent, text, cls) {
  const p = document.createElement("p");
  p.textContent = text;
  if (cls) p.className = cls;
  parent.append(p);
  return p;
}

async function showResult(result) {
  const box = $("result");
  box.replaceChildren();
  const s = result.series;
  line(box, `Analysed: ${s.description || "series"} (${result.n_slices} slices)`, "primary");
  if (s.why) line(box, `Chosen because ${s.why}.`, "muted");
  if (result.lstv_score !== null && result.lstv_score !== undefined) {
    const flag = result.lstv_score_flag;
    line(box, `Calibrated LSTV score: ${result.lstv_score.toFixed(2)} — ` +
      (flag ? "flagged as an LSTV candidate" : "not flagged"),
      "primary " + (flag ? "flagged" : "notflagged"));
    if (result.lstv_score_reason) line(box, `Why: ${result.lstv_score_reason}`);
    line(box, `Seed's entropy rule (secondary): ${result.risk_level}`, "muted");
  } else {
    line(box, `Seed's entropy rule: ${result.risk_level}` +
      (result.lstv_flag ? " (flagged as an LSTV candidate)" : " (not flagged)"), "primary");
    line(box, "No calibrated LSTV score: this checkpoint carries no score reference.", "muted");
  }
  const dl = document.createElement("dl");
  dl.className = "facts";
  for (const [key, m] of Object.entries(result.levels)) {
    const dt = document.createElement("dt"), dd = document.createElement("dd");
    dt.textContent = key.replace("_", "/").toUpperCase();
    dd.textContent = `entropy ${m.entropy === null ? "—" : m.entropy.toFixed(2)}, ` +
      `confidence ${m.confidence === null ? "—" : m.confidence.toFixed(2)}, ` +
      (m.point ? `point (${m.point[0]}, ${m.point[1]})` : "no point");
    dl.append(dt, dd);
  }
  box.append(dl);
  await viewer.load(result.view);
  for (const n of viewer.meta.notes) line(box, n, "muted");
}

async function post(url, body) {
  $("message").textContent = "";
  $("status").textContent = "analysing…";
  try {
    const r = await fetch(url, { method: "POST", body });
    const result = await r.json();
    if (!r.ok) throw new Error(result.error);
    await showResult(result);
    $("status").textContent = "";
  } catch (err) {
    $("status").textContent = "";
    $("message").textContent = err.message;
    $("result").replaceChildren();
    line($("result"), "No verdict.", "primary");
  }
}

function upload(files) {
  const body = new FormData();
  for (const f of files) body.append("files", f, f.name);
  return post("api/analyse", body);
}

$("upload").addEventListener("submit", (e) => { e.preventDefault(); upload($("files").files); });
$("example").addEventListener("click", () => post("api/example", new FormData()));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  upload(e.dataTransfer.files);
});
document.addEventListener("keydown", (e) => {
  if (!typing(e) && viewerKey(viewer, e)) e.preventDefault();
});

const data = $("result-data");
if (data) showResult(JSON.parse(data.textContent));
