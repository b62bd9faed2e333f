/**
 * The web page at `/`: one self-contained HTML document (no CDN, no build step). It talks to the
 * same /v1 API as any client; events are read with fetch() streaming rather than EventSource, so
 * the bearer token travels in the Authorization header (EventSource cannot set headers).
 * Sections: generate (demographics and findings, or a prompt) with a gallery; start a training
 * (diffusion or classifier) or a generation batch (structured cells x seeds) and follow them; the
 * latest evaluation's report (macro AUROC and headline gaps with their intervals); recent jobs.
 */
import { DEFAULT_TRAIN_RUN, MODEL_CONFIG_NAMES, STRATEGIES } from "@cxr/classifier";
import { CHEXPERT_LABELS, RACES } from "@cxr/data";
import { DIFFUSION_CONFIGS } from "@cxr/diffusion";

export function webPage(): string {
  const findings = CHEXPERT_LABELS.filter((label) => label !== "No Finding")
    .map(
      (label) =>
        `<label class="finding"><input type="checkbox" name="finding" value="${label}"> ${label}</label>`,
    )
    .join("\n");
  const races = [
    '<option value="">(not given)</option>',
    ...RACES.map((race) => `<option>${race}</option>`),
  ].join("");
  const batchFindings = ["none", ...CHEXPERT_LABELS.filter((label) => label !== "No Finding")]
    .map(
      (label) =>
        `<label class="finding"><input type="checkbox" name="batch-finding" value="${label}"${label === "none" ? " checked" : ""}> ${label === "none" ? "no finding" : label}</label>`,
    )
    .join("\n");
  const batchRaces = RACES.map(
    (race) =>
      `<label class="finding"><input type="checkbox" name="batch-race" value="${race}"> ${race}</label>`,
  ).join("\n");
  const configs = JSON.stringify({
    diffusion: Object.keys(DIFFUSION_CONFIGS),
    classifier: [...MODEL_CONFIG_NAMES],
    defaults: { diffusion: "phantom-small", classifier: DEFAULT_TRAIN_RUN.config },
  });
  const strategies = STRATEGIES.map((name) => `<option>${name}</option>`).join("");
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>cxr: chest-radiograph generation</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d1d1d;background:#fafafa}
header{background:#20303f;color:#fff;padding:.7em 1.2em;display:flex;gap:1.5em;align-items:baseline}
header h1{font-size:1.15em;margin:0} header a{color:#bcd}
main{display:grid;grid-template-columns:360px 1fr;gap:1.2em;padding:1.2em}
section{background:#fff;border:1px solid #e2e2e2;border-radius:8px;padding:1em}
h2{font-size:1em;margin:.1em 0 .7em}
label{display:block;margin:.35em 0} .row{display:flex;gap:.6em} .row label{flex:1}
input[type=number],input[type=text],input[type=password],select,textarea{width:100%;box-sizing:border-box;padding:.3em}
.finding{display:inline-block;width:48%;margin:.1em 0;font-size:12.5px}
button{padding:.45em 1.1em;margin-top:.6em;cursor:pointer}
progress{width:100%} .status{font-size:12.5px;color:#555;min-height:1.3em}
#gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(180px,1fr));gap:.8em}
figure{margin:0;background:#111;border-radius:6px;overflow:hidden}
figure img{width:100%;display:block;image-rendering:pixelated}
figcaption{background:#fff;font-size:11.5px;padding:.35em;color:#333;word-break:break-word}
table{border-collapse:collapse;width:100%;font-size:12.5px} td,th{border-bottom:1px solid #eee;padding:.25em;text-align:left}
.error{color:#b00020}
details{margin-top:1.2em} summary{cursor:pointer;font-weight:600}
.followed{border-top:1px solid #eee;padding:.4em 0} .followed .what{font-size:12.5px}
.muted{color:#777;font-size:12px}
.stack>section+section{margin-top:1.2em}
</style></head><body>
<header><h1>cxr: chest-radiograph generation</h1><a href="/docs">API reference</a><a href="/openapi.json">OpenAPI</a></header>
<main>
<div>
<section>
<h2>Generate</h2>
<form id="generate">
<label>Token (only when the server has tokens) <input type="password" id="token" autocomplete="off"></label>
<label>Model <select id="model"></select></label>
<label><input type="radio" name="mode" value="structured" checked> Demographics and findings</label>
<div id="structured">
<div class="row">
<label>Sex <select id="sex"><option>female</option><option>male</option></select></label>
<label>Age <input type="number" id="age" min="0" max="120" value="60"></label>
</div>
<label>Race <select id="race">${races}</select></label>
<div>${findings}</div>
</div>
<label><input type="radio" name="mode" value="prompt"> Prompt</label>
<textarea id="prompt" rows="2" placeholder="60 year old WHITE female. Cardiomegaly."></textarea>
<div class="row">
<label>Images <input type="number" id="n" min="1" value="2"></label>
<label>Steps <input type="number" id="steps" min="1" value="20"></label>
</div>
<div class="row">
<label>Guidance <input type="number" id="guidance" min="0" step="0.5" value="3"></label>
<label title="guidance rescale phi (diffusers' guidance_rescale), 0 to 1; 0: off">Rescale <input type="number" id="guidanceRescale" min="0" max="1" step="0.1" value="0"></label>
<label>Sampler <select id="sampler"><option value="">model's</option><option>pndm</option><option>ddim</option><option>ddpm</option><option>dpmpp-2m</option></select></label>
<label>Spacing <select id="spacing"><option>leading</option><option>trailing</option><option>linspace</option></select></label>
</div>
<label title="what guidance steers away from (negative prompt); {patient} is the prompt's demographic sentence; empty: the empty prompt">Negative prompt <input type="text" id="negativePrompt" size="40" placeholder="{patient} No acute cardiopulmonary abnormality."></label>
<label title="the negative prompt's own guidance scale over the empty prompt; 1: none (anything else costs a third UNet row per image)">Negative scale <input type="number" id="negativeGuidance" min="0" max="30" step="0.5" value="1"></label>
<div class="row">
<label>Seed <input type="number" id="seed" min="0" placeholder="random"></label>
<label>Bits <select id="bitDepth"><option>8</option><option>16</option></select></label>
<label title="f16 needs the adapter feature shader-f16">Precision <select id="precision"><option value="">server default</option><option>f32</option><option>f16</option></select></label>
</div>
<button type="submit" id="go">Generate</button>
</form>
<p class="status" id="status"></p>
<progress id="progress" max="1" value="0"></progress>
</section>
<section>
<h2>Train</h2>
<form id="train">
<div class="row">
<label>Kind <select id="train-kind"><option>diffusion</option><option>classifier</option></select></label>
<label>Config <select id="train-config"></select></label>
</div>
<label>Dataset <select id="train-dataset"></select></label>
<div class="row">
<label><span id="train-steps-label">Steps</span> <input type="number" id="train-steps" min="1" value="200"></label>
<label>Batch size <input type="number" id="train-batch" min="1" value="8"></label>
</div>
<div id="classifier-only" hidden>
<div class="row">
<label>Strategy <select id="train-strategy">${strategies}</select></label>
<label>Synthetic dataset <select id="train-synthetic"><option value="">(none)</option></select></label>
</div>
</div>
<label>Publish as (model name) <input type="text" id="train-output" placeholder="trained-..."></label>
<button type="submit" id="train-go">Start training</button>
</form>
<p class="status" id="train-status"></p>
</section>
<section>
<h2>Generation batch</h2>
<form id="batch">
<label>Dataset name <input type="text" id="batch-name" placeholder="synthetic-grid"></label>
<div class="row">
<label><input type="checkbox" name="batch-sex" value="female" checked> female</label>
<label><input type="checkbox" name="batch-sex" value="male" checked> male</label>
</div>
<label>Ages (comma-separated) <input type="text" id="batch-ages" value="40, 70"></label>
<details><summary>Races (none checked: not given)</summary>${batchRaces}</details>
<details><summary>Findings (one cell each)</summary>${batchFindings}</details>
<div class="row">
<label>Seeds (comma-separated) <input type="text" id="batch-seeds" value="1, 2"></label>
<label>Steps <input type="number" id="batch-steps" min="1" value="20"></label>
</div>
<p class="muted" id="batch-size"></p>
<button type="submit" id="batch-go">Start batch</button>
</form>
<p class="status" id="batch-status"></p>
</section>
</div>
<div class="stack">
<section><h2>Gallery</h2><div id="gallery"></div></section>
<section><h2>Trainings and batches</h2><div id="followed"><p class="muted" id="followed-empty">Nothing started from this page yet.</p></div></section>
<section><h2>Latest evaluation</h2><div id="evaluation"><p class="muted">No finished evaluation yet.</p></div></section>
<section><h2>Jobs</h2><table><thead><tr><th>job</th><th>kind</th><th>state</th><th>progress</th><th>created</th></tr></thead><tbody id="jobs"></tbody></table></section>
</div>
</main>
<script>
const CONFIGS = ${configs};
const $ = (id) => document.getElementById(id);
$("token").value = localStorage.getItem("cxr-token") || "";
const headers = () => {
  const token = $("token").value.trim();
  localStorage.setItem("cxr-token", token);
  return token ? { Authorization: "Bearer " + token } : {};
};
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]));
async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) throw new Error(body && body.error ? body.error.message : response.status + " " + response.statusText);
  return body;
}
async function loadModels() {
  try {
    const { default: chosen, models } = await api("/v1/models");
    $("model").innerHTML = models.map((m) => "<option" + (m.name === chosen ? " selected" : "") + ">" + esc(m.name) + "</option>").join("");
    $("status").textContent = ""; $("status").className = "status";
  } catch (e) { $("status").textContent = "models: " + e.message; $("status").className = "status error"; }
}
async function imageUrl(url) {
  const response = await fetch(url, { headers: headers() });
  return URL.createObjectURL(await response.blob());
}
async function showImages(job) {
  for (const image of job.images) {
    if (document.querySelector('[data-image="' + image.id + '"]')) continue;
    const figure = document.createElement("figure");
    figure.dataset.image = image.id;
    const p = job.params;
    const what = p.prompt ? p.prompt : p.structured.age + " y " + (p.structured.race || "") + " " + p.structured.sex + (p.structured.findings.length ? ": " + p.structured.findings.join(", ") : ": no finding");
    figure.innerHTML = '<img alt="generated image"><figcaption>' + esc(what) + "<br>seed " + image.seed + ", " + p.steps + " " + esc(p.sampler) + " steps" + (p.spacing && p.spacing !== "leading" ? " (" + esc(p.spacing) + ")" : "") + ", guidance " + p.guidance + (p.guidanceRescale ? " rescaled by " + p.guidanceRescale : "") + (p.negativePrompt ? ' away from "' + esc(p.negativePrompt) + '"' + (p.negativeGuidance !== undefined && p.negativeGuidance !== 1 ? " at " + p.negativeGuidance : "") : "") + ", " + p.bitDepth + "-bit" + (p.precision ? " " + esc(p.precision) : "") + ", " + esc(p.model) + "</figcaption>";
    figure.querySelector("img").src = await imageUrl(image.url);
    $("gallery").prepend(figure);
  }
}
async function follow(job, view = { progress: $("progress"), status: $("status"), done: async () => showImages(await api(job.links.self)) }) {
  const response = await fetch(job.links.events, { headers: headers() });
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\\n\\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const type = (/^event: (.*)$/m.exec(block) || [])[1];
      const data = (/^data: (.*)$/m.exec(block) || [])[1];
      if (!type || !data) continue;
      const event = JSON.parse(data);
      if (type === "progress") {
        view.progress.max = event.total; view.progress.value = event.step;
        view.status.textContent = "step " + event.step + " of " + event.total + (event.message ? " (" + event.message + ")" : "") + (event.etaSeconds != null ? ", about " + Math.ceil(event.etaSeconds) + " s left" : "");
      } else if (type === "queued" || type === "started") {
        view.status.textContent = type;
      } else {
        view.status.textContent = type + (event.error ? ": " + event.error.message : "");
        view.status.className = "status" + (type === "done" ? "" : " error");
        if (type === "done") { view.progress.value = view.progress.max; await view.done(event); }
        refreshJobs();
        return;
      }
    }
  }
}
async function refreshJobs() {
  try {
    const { jobs } = await api("/v1/jobs?limit=15");
    $("jobs").innerHTML = jobs.map((j) => "<tr><td>" + esc(j.id) + "</td><td>" + esc(j.kind) + "</td><td>" + esc(j.state) + "</td><td>" + (j.progress ? j.progress.step + "/" + j.progress.total : "") + "</td><td>" + esc(j.createdAt.slice(11, 19)) + "</td></tr>").join("");
  } catch (e) { /* shown by the form */ }
  loadEvaluation();
}
const percent = (x) => x == null ? "n/a" : (100 * x).toFixed(1) + "%";
const num = (x) => x == null ? "n/a" : x.toFixed(3);
const interval = (e, f) => f(e.value) + (e.lower != null && e.upper != null ? " (" + f(e.lower) + " to " + f(e.upper) + ")" : "");
let shownEvaluation = null;
async function loadEvaluation() {
  try {
    const { jobs } = await api("/v1/jobs?kind=evaluation&state=succeeded&limit=1");
    if (!jobs.length || jobs[0].id === shownEvaluation) return;
    const job = jobs[0];
    const doc = await api("/v1/evaluations/" + job.id);
    shownEvaluation = job.id;
    const rates = ["underdiagnosisRate", "overdiagnosisRate"];
    const rows = doc.gaps.filter((g) => g.label === null).map((g) => {
      const f = rates.includes(g.metric) ? percent : num;
      const value = g.headline.gap.value == null ? "undefined: " + esc(g.headline.gap.undefinedReason || "") : interval(g.headline.gap, f);
      return "<tr><td>" + esc(g.dimension) + "</td><td>" + esc(g.metric) + "</td><td>" + (g.headline.worst ? esc(g.headline.worst) + " vs " + esc(g.headline.best) : "") + "</td><td>" + value + "</td></tr>";
    }).join("");
    $("evaluation").innerHTML =
      '<p><b>' + esc(job.params.predictions) + "</b>" + (job.params.validation ? " (thresholds and headline pairs from " + esc(job.params.validation) + ")" : "") + " (job " + esc(job.id) + ", " + esc((job.finishedAt || "").slice(0, 19).replace("T", " ")) + ', <a href="#" id="evaluation-report">report.md</a>)</p>' +
      '<p id="evaluation-auroc">Macro AUROC ' + interval(doc.overall.macroAuroc, num) + "; underdiagnosis rate " + interval(doc.overall.underdiagnosisRate, percent) + "</p>" +
      '<table><thead><tr><th>dimension</th><th>metric</th><th>worst vs best</th><th>headline gap (95% interval)</th></tr></thead><tbody id="evaluation-gaps">' + rows + "</tbody></table>" +
      '<p class="muted">Intervals: ' + esc(doc.config ? doc.config.intervalMethod || "" : "") + "</p>";
    $("evaluation-report").addEventListener("click", async (e) => {
      e.preventDefault();
      const response = await fetch("/v1/evaluations/" + job.id + "/report", { headers: headers() });
      window.open(URL.createObjectURL(new Blob([await response.text()], { type: "text/plain" })));
    });
  } catch (e) { $("evaluation").innerHTML = '<p class="error">evaluation: ' + esc(e.message) + "</p>"; }
}
async function loadDatasets() {
  try {
    const { datasets } = await api("/v1/datasets");
    const folders = datasets.filter((d) => d.kind === "folder").map((d) => "<option>" + esc(d.name) + "</option>").join("");
    const chosen = [$("train-dataset").value, $("train-synthetic").value];
    $("train-dataset").innerHTML = folders;
    $("train-synthetic").innerHTML = '<option value="">(none)</option>' + folders;
    if (chosen[0]) $("train-dataset").value = chosen[0];
    $("train-synthetic").value = chosen[1];
  } catch (e) { /* shown by the form */ }
}
function setTrainKind() {
  const kind = $("train-kind").value;
  $("train-config").innerHTML = CONFIGS[kind].map((name) => "<option" + (name === CONFIGS.defaults[kind] ? " selected" : "") + ">" + esc(name) + "</option>").join("");
  $("train-steps-label").textContent = kind === "classifier" ? "Epochs" : "Steps";
  $("train-steps").value = kind === "classifier" ? 8 : 200;
  $("classifier-only").hidden = kind !== "classifier";
}
function followCard(job, what) {
  $("followed-empty")?.remove();
  const card = document.createElement("div");
  card.className = "followed";
  card.dataset.job = job.id;
  card.innerHTML = '<div class="what">' + esc(what) + ' <span class="muted">' + esc(job.id) + '</span></div><progress max="1" value="0"></progress><div class="status"></div>';
  $("followed").prepend(card);
  return { progress: card.querySelector("progress"), status: card.querySelector(".status"), card };
}
async function submitAndFollow(path, body, what, statusId, button) {
  $(statusId).className = "status";
  button.disabled = true;
  try {
    const answer = await api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const job = answer.batch || answer;
    $(statusId).textContent = "started " + job.id;
    refreshJobs();
    const view = followCard(job, what);
    follow(job, { ...view, done: async (event) => { view.status.textContent = "done: " + summary(event.result); loadDatasets(); } })
      .catch((e) => { view.status.textContent = e.message; view.status.className = "status error"; });
  } catch (e) {
    $(statusId).textContent = e.message; $(statusId).className = "status error";
  } finally { button.disabled = false; }
}
function summary(result) {
  if (!result) return "";
  return Object.entries(result).filter(([, v]) => v === null || typeof v !== "object").map(([k, v]) => k + " " + (typeof v === "number" && !Number.isInteger(v) ? v.toFixed(3) : v)).join(", ");
}
$("train-kind").addEventListener("change", setTrainKind);
$("train").addEventListener("submit", (event) => {
  event.preventDefault();
  const kind = $("train-kind").value;
  const body = { kind, dataset: $("train-dataset").value, config: $("train-config").value, batchSize: Number($("train-batch").value) };
  if (kind === "classifier") {
    body.epochs = Number($("train-steps").value);
    body.strategy = $("train-strategy").value;
    if ($("train-synthetic").value) body.synthetic = $("train-synthetic").value;
  } else body.steps = Number($("train-steps").value);
  if ($("train-output").value.trim()) body.output = $("train-output").value.trim();
  submitAndFollow("/v1/trainings", body, kind + " training on " + body.dataset + " (" + body.config + ")", "train-status", $("train-go"));
});
function batchCells() {
  const checked = (name) => [...document.querySelectorAll('input[name="' + name + '"]:checked')].map((box) => box.value);
  const sexes = checked("batch-sex");
  const ages = $("batch-ages").value.split(",").map((x) => x.trim()).filter(Boolean).map(Number);
  const races = checked("batch-race");
  const findings = checked("batch-finding").map((f) => f === "none" ? [] : [f]);
  const cells = [];
  for (const sex of sexes) for (const age of ages) for (const race of races.length ? races : [null]) for (const f of findings)
    cells.push({ structured: { sex, age, race, findings: f } });
  const seeds = $("batch-seeds").value.split(",").map((x) => x.trim()).filter(Boolean).map(Number);
  return { cells, seeds };
}
function showBatchSize() {
  const { cells, seeds } = batchCells();
  $("batch-size").textContent = cells.length + " cells x " + seeds.length + " seeds = " + cells.length * seeds.length + " images";
}
$("batch").addEventListener("input", showBatchSize);
$("batch").addEventListener("submit", (event) => {
  event.preventDefault();
  const { cells, seeds } = batchCells();
  const body = { name: $("batch-name").value.trim(), cells, seeds, steps: Number($("batch-steps").value), model: $("model").value || undefined };
  submitAndFollow("/v1/generation-batches", body, "batch " + body.name + ": " + cells.length + " cells x " + seeds.length + " seeds", "batch-status", $("batch-go"));
});
$("generate").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("status").className = "status";
  const mode = document.querySelector('input[name="mode"]:checked').value;
  const body = {
    model: $("model").value || undefined,
    n: Number($("n").value), steps: Number($("steps").value), guidance: Number($("guidance").value),
    guidanceRescale: Number($("guidanceRescale").value), negativePrompt: $("negativePrompt").value,
    negativeGuidance: Number($("negativeGuidance").value),
    spacing: $("spacing").value, bitDepth: Number($("bitDepth").value),
  };
  if ($("sampler").value !== "") body.sampler = $("sampler").value;
  if ($("seed").value !== "") body.seed = Number($("seed").value);
  if ($("precision").value !== "") body.precision = $("precision").value;
  if (mode === "prompt") body.prompt = $("prompt").value;
  else body.structured = {
    sex: $("sex").value, age: Number($("age").value), race: $("race").value || null,
    findings: [...document.querySelectorAll('input[name="finding"]:checked')].map((box) => box.value),
  };
  $("go").disabled = true;
  try {
    const job = await api("/v1/generations", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    $("status").textContent = "queued " + job.id;
    refreshJobs();
    await follow(job);
  } catch (e) {
    $("status").textContent = e.message; $("status").className = "status error";
  } finally { $("go").disabled = false; }
});
$("token").addEventListener("input", () => { headers(); loadModels(); loadDatasets(); refreshJobs(); });
setTrainKind(); showBatchSize();
loadModels(); loadDatasets(); refreshJobs();
setInterval(refreshJobs, 3000);
</script></body></html>`;
}
