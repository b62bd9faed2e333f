/**
 * The API reference page at /docs: reads /openapi.json in the browser and lists every route with
 * its parameters, body schema and responses. Self-contained (no CDN), so it works offline.
 */
export function apiReferencePage(): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>cxr API reference</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.45 system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em} h2{font-size:1.1em;margin-top:2em;border-bottom:1px solid #ddd}
.route{margin:1em 0;padding:.6em .8em;border:1px solid #e3e3e3;border-radius:6px}
.method{display:inline-block;min-width:4.5em;font-weight:600;font-family:monospace}
.path{font-family:monospace;font-weight:600} pre{background:#f6f6f6;padding:.6em;overflow:auto;font-size:12px}
.small{color:#666}
</style></head><body>
<h1>cxr API reference</h1>
<p class="small">Generated from <a href="/openapi.json">/openapi.json</a>, the same zod schemas that validate requests.
Send <code>Authorization: Bearer TOKEN</code> on every <code>/v1</code> route when the server has tokens.</p>
<div id="routes">loading /openapi.json ...</div>
<script>
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]));
function resolve(doc, schema) {
  if (schema && schema.$ref) return doc.components.schemas[schema.$ref.split("/").pop()] || schema;
  return schema;
}
fetch("/openapi.json").then((r) => r.json()).then((doc) => {
  const groups = {};
  for (const [path, methods] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const tag = (op.tags && op.tags[0]) || "other";
      (groups[tag] = groups[tag] || []).push({ path, method, op });
    }
  }
  let html = "";
  for (const [tag, routes] of Object.entries(groups)) {
    html += "<h2>" + esc(tag) + "</h2>";
    for (const { path, method, op } of routes) {
      html += '<div class="route"><span class="method">' + method.toUpperCase() + '</span> <span class="path">' + esc(path) + "</span>";
      html += "<div>" + esc(op.summary || "") + "</div>";
      if (op.parameters && op.parameters.length) {
        html += '<div class="small">parameters: ' + op.parameters.map((p) => esc(p.name) + " (" + esc(p.in) + (p.required ? ", required" : "") + ")").join(", ") + "</div>";
      }
      const body = op.requestBody && op.requestBody.content && op.requestBody.content["application/json"];
      if (body) html += "<details><summary>request body</summary><pre>" + esc(JSON.stringify(resolve(doc, body.schema), null, 2)) + "</pre></details>";
      html += '<div class="small">responses: ' + Object.entries(op.responses || {}).map(([code, r]) => esc(code) + " " + esc(r.description || "")).join("; ") + "</div></div>";
    }
  }
  document.getElementById("routes").innerHTML = html;
}).catch((e) => { document.getElementById("routes").textContent = "could not load /openapi.json: " + e; });
</script></body></html>`;
}
