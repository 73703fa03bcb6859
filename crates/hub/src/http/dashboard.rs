//! The dashboard: one static page. It holds no data itself; its script asks
//! for the admin token (kept in the browser's local storage) and reads the API.

use axum::response::Html;

pub async fn page() -> Html<&'static str> {
    Html(PAGE)
}

const PAGE: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Ganglion hub</title>
<style>
 body { font: 14px system-ui, sans-serif; margin: 2rem; color: #222; }
 table { border-collapse: collapse; } td, th { padding: .3rem .8rem; border-bottom: 1px solid #ddd; text-align: left; }
 .online { color: #0a0; } .offline { color: #a00; } #err { color: #a00; }
</style></head>
<body>
<h1>Ganglion hub</h1>
<p id="err"></p>
<form id="login" hidden>Admin token (from <code>DATA_DIR/admin.token</code>):
 <input id="token" type="password" size="50"> <button>Use</button></form>
<table id="nodes" hidden><thead><tr><th>Node</th><th>Status</th><th>Policy</th><th>Last heartbeat</th><th>OS / kernel</th><th>Protections</th></tr></thead><tbody></tbody></table>
<script>
const key = "ganglion-admin-token";
const login = document.getElementById("login");
login.onsubmit = (e) => { e.preventDefault(); localStorage.setItem(key, document.getElementById("token").value.trim()); load(); };
function cell(tr, text, cls) { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; tr.appendChild(td); }
async function load() {
  const token = localStorage.getItem(key);
  if (!token) { login.hidden = false; return; }
  const r = await fetch("/api/v1/nodes", { headers: { Authorization: "Bearer " + token } });
  if (r.status === 401) { localStorage.removeItem(key); login.hidden = false; document.getElementById("err").textContent = "token refused"; return; }
  login.hidden = true;
  const nodes = await r.json();
  const body = document.querySelector("#nodes tbody"); body.replaceChildren();
  for (const n of nodes) {
    const tr = document.createElement("tr"); const c = n.capabilities || {};
    cell(tr, n.name); cell(tr, n.status, n.status); cell(tr, n.policy); cell(tr, n.last_heartbeat || "never");
    cell(tr, (c.os || "?") + " " + (c.kernel || "")); cell(tr, (c.protections || []).join(", "));
    body.appendChild(tr);
  }
  document.getElementById("nodes").hidden = false;
}
load(); setInterval(load, 5000);
</script></body></html>
"##;
