/**
 * The web page at `/`: one self-contained HTML document (no CDN, no build step). It talks to the
 * same /v1 API as any client; events are read with fetch() streaming rather than EventSource, so
 * the bearer token travels in the Authorization header (EventSource cannot set headers).
 */
import { CHEXPERT_LABELS, RACES } from "@cxr/data";

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
<label>Sampler <select id="sampler"><option>pndm</option><option>ddim</option><option>ddpm</option><option>dpmpp-2m</option></select></label>
</div>
<div class="row">
<label>Seed <input type="number" id="seed" min="0" placeholder="random"></label>
<label>Bits <select id="bitDepth"><option>8</option><option>16</option></select></label>
</div>
<button type="submit" id="go">Generate</button>
</form>
<p class="status" id="status"></p>
<progress id="progress" max="1" value="0"></progress>
</section>
</div>
<div>
<section><h2>Gallery</h2><div id="gallery"></div></section>
<section style="margin-top:1.2em"><h2>Jobs</h2><table><thead><tr><th>job</th><th>kind</th><th>state</th><th>progress</th><th>created</th></tr></thead><tbody id="jobs"></tbody></table></section>
</div>
</main>
<script>
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
    figure.innerHTML = '<img alt="generated image"><figcaption>' + esc(what) + "<br>seed " + image.seed + ", " + p.steps + " " + esc(p.sampler) + " steps, guidance " + p.guidance + ", " + p.bitDepth + "-bit, " + esc(p.model) + "</figcaption>";
    figure.querySelector("img").src = await imageUrl(image.url);
    $("gallery").prepend(figure);
  }
}
async function follow(job) {
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
        $("progress").max = event.total; $("progress").value = event.step;
        $("status").textContent = "step " + event.step + " of " + event.total + (event.etaSeconds != null ? ", about " + Math.ceil(event.etaSeconds) + " s left" : "");
      } else if (type === "queued" || type === "started") {
        $("status").textContent = type;
      } else {
        $("status").textContent = type + (event.error ? ": " + event.error.message : "");
        $("status").className = "status" + (type === "done" ? "" : " error");
        if (type === "done") { $("progress").value = $("progress").max; await showImages(await api(job.links.self)); }
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
}
$("generate").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("status").className = "status";
  const mode = document.querySelector('input[name="mode"]:checked').value;
  const body = {
    model: $("model").value || undefined,
    n: Number($("n").value), steps: Number($("steps").value), guidance: Number($("guidance").value),
    sampler: $("sampler").value, bitDepth: Number($("bitDepth").value),
  };
  if ($("seed").value !== "") body.seed = Number($("seed").value);
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
$("token").addEventListener("input", () => { headers(); loadModels(); refreshJobs(); });
loadModels(); refreshJobs();
</script></body></html>`;
}
