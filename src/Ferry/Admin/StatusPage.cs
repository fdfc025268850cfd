namespace Ferry.Admin;

// The status page at the admin listener's "/": one self-contained document (inline CSS and script, an SVG chart, no
// external assets, so it works on an isolated network) that polls /status and /stats every two seconds.
internal static class StatusPage
{
    public const string Html = """
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Ferry status</title>
<style>
:root { --bg:#f5f6f8; --card:#fff; --ink:#1d2330; --muted:#6b7385; --line:#e3e6ec; --ok:#1a9b5b; --bad:#d2382f; --req:#3867d6; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; background:var(--bg); color:var(--ink); }
header { display:flex; align-items:baseline; gap:16px; padding:14px 24px; background:#1d2330; color:#fff; }
header h1 { margin:0; font-size:20px; letter-spacing:.5px; }
header .sub { color:#aab2c5; font-size:13px; }
header .right { margin-left:auto; font-size:12px; color:#aab2c5; }
#conn.bad { color:#ff8a80; }
main { padding:20px 24px; max-width:1400px; margin:0 auto; }
.tiles { display:grid; grid-template-columns:repeat(auto-fit,minmax(170px,1fr)); gap:12px; margin-bottom:16px; }
.tile { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:10px 14px; }
.tile .k { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.4px; }
.tile .v { font-size:26px; font-weight:600; font-variant-numeric:tabular-nums; }
.card { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:14px 16px; margin-bottom:16px; }
.card h2 { margin:0 0 8px; font-size:15px; }
.card h2 .muted { font-weight:400; }
.muted { color:var(--muted); }
#chart { width:100%; height:240px; display:block; }
.legend { display:flex; flex-wrap:wrap; gap:14px; font-size:12px; margin-top:6px; }
.legend i { display:inline-block; width:10px; height:10px; border-radius:2px; margin-right:5px; vertical-align:-1px; }
table { width:100%; border-collapse:collapse; font-variant-numeric:tabular-nums; }
th, td { text-align:right; padding:6px 8px; border-bottom:1px solid var(--line); white-space:nowrap; }
th { color:var(--muted); font-weight:500; font-size:12px; text-transform:uppercase; letter-spacing:.3px; }
th:nth-child(-n+3), td:nth-child(-n+3) { text-align:left; }
tr:last-child td { border-bottom:0; }
.badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; font-weight:600; color:#fff; }
.badge.ok { background:var(--ok); } .badge.bad { background:var(--bad); }
.why { color:var(--muted); font-size:12px; margin-left:6px; }
.bar { display:inline-block; width:60px; height:6px; background:var(--line); border-radius:3px; vertical-align:middle; margin-left:6px; overflow:hidden; }
.bar b { display:block; height:100%; background:var(--req); }
.backup { font-size:11px; color:var(--muted); border:1px solid var(--line); border-radius:4px; padding:0 4px; margin-left:4px; }
</style>
</head>
<body>
<header><h1>Ferry</h1><span class="sub" id="listeners"></span><span class="right">updated <span id="updated">never</span> <span id="conn"></span></span></header>
<main>
<div class="tiles">
  <div class="tile"><div class="k">Requests/s (10 s)</div><div class="v" id="rps">–</div></div>
  <div class="tile"><div class="k">5xx/s (10 s)</div><div class="v" id="eps">–</div></div>
  <div class="tile"><div class="k">Requests (10 min)</div><div class="v" id="total">–</div></div>
  <div class="tile"><div class="k">5xx (10 min)</div><div class="v" id="errors">–</div></div>
  <div class="tile"><div class="k">Destinations up</div><div class="v" id="up">–</div></div>
</div>
<div class="card">
  <h2>Requests per second and 5xx by cause <span class="muted">— last 10 minutes</span></h2>
  <svg id="chart" data-total="0" viewBox="0 0 1000 240" preserveAspectRatio="none" role="img" aria-label="requests per second"></svg>
  <div class="legend" id="legend"></div>
</div>
<div id="certificates"></div>
<div id="clusters"></div>
</main>
<script>
"use strict";
const query = location.search; // carries access_token when the admin endpoints need one
const palette = ["#d2382f","#f39c12","#8e44ad","#16a085","#c0392b","#e67e22","#2c3e50","#7f8c8d"];
const colors = {};
const el = id => document.getElementById(id);
const esc = s => String(s ?? "").replace(/[&<>"']/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;","\"":"&quot;","'":"&#39;"}[c]));
const fmt = n => n >= 1000 ? (n/1000).toFixed(1) + "k" : (Math.round(n*10)/10).toString();
function colorOf(cause) { if (!(cause in colors)) colors[cause] = palette[Object.keys(colors).length % palette.length]; return colors[cause]; }
function seconds(s) { return s >= 60 ? (s/60).toFixed(s % 60 ? 1 : 0) + " min" : s + " s"; }

function renderStatus(st) {
  let config = "";
  if (st.config) {
    config = `; config ${st.config.version ?? "–"} loaded ${new Date(st.config.loadedAt).toLocaleTimeString()}${st.config.source ? " from " + st.config.source : ""}`;
    const r = st.lastReload;
    if (r && r.result === "failure") config += `; last reload failed (${r.errors.length} error${r.errors.length === 1 ? "" : "s"}: ${r.errors[0] ?? ""})`;
  }
  el("listeners").textContent = "listening on " + st.listeners.join(", ") + config;
  const limit = l => l.limit === null ? "–" : `${l.limit}${l.adaptive && l.baselineLatencyMs !== null ? `<span class="why">adaptive, ${l.recentLatencyMs ?? "–"} / ${l.baselineLatencyMs} ms</span>` : ""}`;
  let up = 0, all = 0, html = "";
  for (const c of st.clusters) {
    html += `<div class="card" data-cluster="${esc(c.id)}"><h2>${esc(c.id)} <span class="muted">${esc(c.loadBalancingPolicy)}</span></h2><table>
<tr><th>Destination</th><th>Address</th><th>Health</th><th>In flight</th><th>Limit</th><th>Queued</th><th>Idle</th><th>Active</th><th>Opened</th><th>Reused</th><th>Reuse</th><th>Replays</th><th>Keep-alive limit</th></tr>`;
    for (const d of c.destinations) {
      all++; const ok = d.health === "available"; if (ok) up++;
      const p = d.pool, ratio = Math.round(p.reuseRatio * 100);
      html += `<tr data-destination="${esc(d.id)}" data-health="${esc(d.health)}"><td><b>${esc(d.id)}</b>${d.backup ? '<span class="backup">backup</span>' : ""}</td>
<td class="muted">${esc(d.address)}</td>
<td><span class="badge ${ok ? "ok" : "bad"}">${ok ? "up" : "down"}</span><span class="why">${esc(d.healthReason)}</span></td>
<td>${d.inFlight}</td><td>${limit(d.concurrencyLimit)}</td><td>${d.queued}</td><td>${p.idle}</td><td>${p.active}</td><td>${p.opened}</td><td>${p.reused}</td>
<td>${ratio}%<span class="bar"><b style="width:${ratio}%"></b></span></td><td>${p.replays}</td>
<td>${seconds(p.idleTimeoutSeconds)}${p.learned.idleTimeoutSeconds !== null ? `<span class="why">learned ${seconds(p.learned.idleTimeoutSeconds)}</span>` : ""}${p.learned.maxRequests > 0 ? `<span class="why">max ${p.learned.maxRequests} req</span>` : ""}</td></tr>`;
    }
    html += "</table></div>";
  }
  el("clusters").innerHTML = html;
  el("up").textContent = up + " / " + all;
  renderCertificates(st.certificates ?? []);
}

// HTTPS listeners only: red when the certificate expires within 14 days or its last reload failed.
function renderCertificates(certs) {
  if (certs.length === 0) { el("certificates").innerHTML = ""; return; }
  let html = `<div class="card"><h2>Certificates</h2><table>
<tr><th>Listener</th><th>Server name</th><th>Subject</th><th>Not after</th><th>Last reload</th></tr>`;
  for (const c of certs) {
    const days = Math.floor((Date.parse(c.notAfter) - Date.now()) / 86400000), failed = c.lastReloadResult === "failure";
    html += `<tr data-listener="${esc(c.listener)}" data-server-name="${esc(c.serverName)}"><td><b>${esc(c.listener)}</b></td><td>${esc(c.serverName)}</td>
<td class="muted">${esc(c.subject)}</td>
<td><span class="badge ${days < 14 ? "bad" : "ok"}">${esc(String(c.notAfter).slice(0, 10))}</span><span class="why">${days} days</span></td>
<td>${c.lastReload ? `<span class="badge ${failed ? "bad" : "ok"}">${esc(c.lastReloadResult)}</span><span class="why">${esc(String(c.lastReload).slice(0, 19).replace("T", " "))}${failed ? ": " + esc(c.lastReloadError) : ""}</span>` : "–"}</td></tr>`;
  }
  el("certificates").innerHTML = html + "</table></div>";
}

function renderStats(s) {
  const n = s.requests.length, svg = el("chart"), W = 1000, H = 240, top = 12, bottom = 22, left = 40;
  const causes = Object.keys(s.errors);
  const errorsAt = i => causes.reduce((a, c) => a + s.errors[c][i], 0);
  const max = Math.max(1, ...s.requests);
  const scale = niceMax(max), x = i => left + (W - left) * i / (n - 1 || 1), y = v => H - bottom - (H - bottom - top) * v / scale;
  let out = "";
  for (let k = 0; k <= 5; k++) {
    const v = scale * k / 5, yy = y(v);
    out += `<line x1="${left}" x2="${W}" y1="${yy}" y2="${yy}" stroke="#e3e6ec"/><text x="${left-6}" y="${yy+4}" font-size="11" fill="#6b7385" text-anchor="end">${fmt(v)}</text>`;
  }
  for (let m = 0; m <= n / 60; m++) {
    const i = n - 1 - m * 60; if (i < 0) break;
    out += `<text x="${x(i)}" y="${H-6}" font-size="11" fill="#6b7385" text-anchor="${m === 0 ? "end" : "middle"}">${m === 0 ? "now" : "-" + m + "m"}</text>`;
  }
  let area = `M${x(0)},${y(0)}`, line = "";
  s.requests.forEach((v, i) => { area += `L${x(i)},${y(v)}`; line += (i ? "L" : "M") + `${x(i)},${y(v)}`; });
  area += `L${x(n-1)},${y(0)}Z`;
  out += `<path d="${area}" fill="#3867d6" fill-opacity=".12"/><path d="${line}" fill="none" stroke="#3867d6" stroke-width="1.5" vector-effect="non-scaling-stroke"/>`;
  const bw = Math.max(3, (W - left) / n);
  for (let i = 0; i < n; i++) {
    let base = 0;
    for (const c of causes) {
      const v = s.errors[c][i]; if (!v) continue;
      out += `<rect class="err" x="${x(i) - bw/2}" width="${bw}" y="${y(base + v)}" height="${y(base) - y(base + v)}" fill="${colorOf(c)}"/>`;
      base += v;
    }
  }
  svg.innerHTML = out;
  const total = s.requests.reduce((a, b) => a + b, 0);
  let errors = 0; for (let i = 0; i < n; i++) errors += errorsAt(i);
  svg.dataset.total = total; svg.dataset.errors = errors;
  const last = a => a.slice(-11, -1).reduce((p, q) => p + q, 0) / 10; // the 10 full seconds before the current one
  el("rps").textContent = fmt(last(s.requests));
  el("eps").textContent = fmt(last(s.requests.map((_, i) => errorsAt(i))));
  el("total").textContent = total.toLocaleString("en");
  el("errors").textContent = errors.toLocaleString("en");
  el("legend").innerHTML = `<span><i style="background:#3867d6"></i>requests/s</span>` +
    (causes.length ? causes.map(c => `<span><i style="background:${colorOf(c)}"></i>${esc(c)}</span>`).join("") : `<span class="muted">no 5xx</span>`);
}

function niceMax(v) { const p = Math.pow(10, Math.floor(Math.log10(v))); for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p; return 10 * p; }

async function refresh() {
  try {
    const [st, s] = await Promise.all([fetch("status" + query, {cache: "no-store"}), fetch("stats" + query, {cache: "no-store"})]);
    if (!st.ok) throw new Error("status " + st.status);
    renderStatus(await st.json());
    if (s.ok) renderStats(await s.json());
    el("updated").textContent = new Date().toLocaleTimeString("en-GB");
    el("conn").textContent = ""; el("conn").className = "";
  } catch (e) {
    el("conn").textContent = "(" + e.message + ")"; el("conn").className = "bad";
  }
}
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
""";
}
