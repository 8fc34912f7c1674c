//! The console page: report.html's style and charts (the frames carry the charts as SVG
//! drawn by [`crate::svg`]), a fault form, and a few lines of JavaScript that read the
//! stream. Everything is inline: no CDN, it works offline.

use std::sync::LazyLock;

/// The page.
pub static HTML: LazyLock<String> = LazyLock::new(|| {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Flowline run console</title><style>{}{CONSOLE_CSS}</style></head>\
         <body><main>{BODY}</main><script>{SCRIPT}</script></body></html>",
        crate::report::CSS
    )
});

const CONSOLE_CSS: &str = r#"
.chart{width:100%;height:auto}
.run{background:#1565c0}.done{background:#455a64}
form.fault{display:flex;flex-wrap:wrap;gap:8px;align-items:end;background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px}
form.fault label{display:flex;flex-direction:column;font-size:12px;color:#555;gap:2px}
form.fault input,form.fault select{font-size:14px;padding:3px 6px}
button{font-size:14px;padding:4px 12px;cursor:pointer}
#msg{margin:6px 0;font-size:13px;min-height:18px}#msg.bad{color:#c62828;font-weight:600}#msg.good{color:#2e7d32}
.cols{display:flex;flex-wrap:wrap;gap:24px}
td.holding,td.held{color:#2e7d32;font-weight:600}td.failing,td.failed{color:#c62828;font-weight:700}
"#;

const BODY: &str = r#"
<h1>Flowline run console: <span id="scenario">…</span><span id="phase" class="badge run">connecting</span></h1>
<p class="meta" id="meta"></p>
<div class="cards">
 <div class="card"><div class="v" id="users">–</div><div class="k">users connected</div></div>
 <div class="card"><div class="v" id="sends">–</div><div class="k">sends / s</div></div>
 <div class="card"><div class="v" id="deliveries">–</div><div class="k">deliveries / s</div></div>
 <div class="card"><div class="v" id="delivery-p50">–</div><div class="k">delivery p50 (ms, last second)</div></div>
 <div class="card"><div class="v" id="delivery-p99">–</div><div class="k">delivery p99 (ms)</div></div>
 <div class="card"><div class="v" id="ack-p99">–</div><div class="k">ack p99 (ms)</div></div>
 <div class="card"><div class="v" id="errors">–</div><div class="k">errors so far</div></div>
 <div class="card"><div class="v" id="lost">–</div><div class="k">lost (checked at the end)</div></div>
 <div class="card"><div class="v" id="duplicated">–</div><div class="k">duplicated (checked at the end)</div></div>
</div>
<h2>Faults by hand</h2>
<form class="fault" id="fault">
 <label>kind<select id="kind"></select></label>
 <label>target<select id="target"></select></label>
 <label id="param-label">parameter<input id="param" size="10"></label>
 <label>duration<input id="duration" value="10s" size="8"></label>
 <button type="submit" id="inject">Inject</button>
 <button type="button" id="heal-all">Heal all</button>
</form>
<div id="msg"></div>
<table id="manual"><tr><th class="l">#</th><th class="l">fault</th><th>at (s from measurement)</th><th class="l">state</th><th></th></tr></table>
<div class="cols">
 <div><h2>Thresholds</h2><table id="thresholds"></table></div>
 <div><h2>Errors by kind</h2><table id="errkinds"></table></div>
 <div><h2>Processes</h2><table id="procs"></table></div>
</div>
<h2>Over time</h2>
<p class="note">Shaded: fault windows (scheduled and by hand). Dashed lines: node events. Updated every second.</p>
<div id="charts"></div>
"#;

const SCRIPT: &str = r#"
const token = new URLSearchParams(location.search).get('token') || '';
const auth = {'Authorization': 'Bearer ' + token};
const $ = id => document.getElementById(id);
let info = null, kinds = [];
const fmt = v => v === null || v === undefined ? '–' : (typeof v === 'number' ? (Number.isInteger(v) ? v.toLocaleString('en') : v.toFixed(1)) : String(v));
const esc = s => String(s).replace(/[&<>"]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
function say(text, good) { const m = $('msg'); m.textContent = text; m.className = good ? 'good' : 'bad'; }
function targets() {
  const k = kinds.find(k => k.kind === $('kind').value) || {on: 'link', param: ''};
  if (!info) return;
  const list = k.on === 'node' ? info.nodes : k.on === 'host' ? info.nodes : info.links;
  const t = $('target'), keep = t.value;
  t.innerHTML = list.map(n => `<option>${esc(n)}</option>`).join('');
  if (list.includes(keep)) t.value = keep;
  $('param-label').firstChild.textContent = k.param || 'parameter';
  $('param').disabled = !k.param;
  $('param').value = k.example || '';
}
async function api(method, path, body) {
  const r = await fetch(path, {method, headers: {...auth, 'Content-Type': 'application/json'}, body: body ? JSON.stringify(body) : undefined});
  let j = {}; try { j = await r.json(); } catch (e) {}
  if (!r.ok) throw new Error(j.error || ('HTTP ' + r.status));
  return j;
}
$('fault').addEventListener('submit', async ev => {
  ev.preventDefault();
  const k = kinds.find(k => k.kind === $('kind').value);
  const body = {kind: k.kind, target: $('target').value, duration: $('duration').value.trim()};
  if (k.param && $('param').value.trim() !== '') body[k.param] = k.numeric ? Number($('param').value) : $('param').value.trim();
  try { const j = await api('POST', '/api/faults', body); say(`injected #${j.fault.id}: ${j.fault.label} on ${j.fault.targets.join(', ')}`, true); }
  catch (e) { say('refused: ' + e.message, false); }
});
$('heal-all').addEventListener('click', async () => {
  try { const j = await api('DELETE', '/api/faults'); say(`healed ${j.healed.length} fault(s)`, true); }
  catch (e) { say('refused: ' + e.message, false); }
});
async function heal(id) {
  try { await api('DELETE', '/api/faults/' + id); say(`healed #${id}`, true); }
  catch (e) { say('refused: ' + e.message, false); }
}
function render(f) {
  const phase = $('phase');
  phase.textContent = f.passed === true ? 'PASSED' : f.passed === false ? 'FAILED' : f.phase;
  phase.className = 'badge ' + (f.passed === true ? 'pass' : f.passed === false ? 'fail' : f.phase === 'finished' ? 'done' : 'run');
  const l = f.latest || {};
  $('users').textContent = fmt(l.users);
  $('sends').textContent = fmt(l.sent);
  $('deliveries').textContent = fmt(l.delivered);
  $('delivery-p50').textContent = l.delivery ? l.delivery.p50.toFixed(1) : '–';
  $('delivery-p99').textContent = l.delivery ? l.delivery.p99.toFixed(1) : '–';
  $('ack-p99').textContent = l.ack ? l.ack.p99.toFixed(1) : '–';
  $('errors').textContent = fmt(f.errors_total);
  $('lost').textContent = fmt(f.lost);
  $('duplicated').textContent = fmt(f.duplicated);
  $('meta').innerHTML = `second <b>${f.t}</b> of the run`;
  const active = new Set((f.faults || []).filter(w => w.end === null).map(w => w.label));
  $('manual').innerHTML = '<tr><th class="l">#</th><th class="l">fault</th><th>at (s from measurement)</th><th class="l">state</th><th></th></tr>' +
    (f.manual || []).map(m => { const on = active.has(m.label); return `<tr><td class="l">${m.id}</td><td class="l">${esc(m.label)}</td><td>${m.at_s.toFixed(1)}</td><td class="l">${on ? 'active' : 'healed'}</td><td>${on ? `<button data-heal="${m.id}">Heal</button>` : ''}</td></tr>`; }).join('');
  $('thresholds').innerHTML = '<tr><th class="l">threshold</th><th>now</th><th class="l">state</th></tr>' +
    (f.thresholds || []).map(t => `<tr><td class="l">${esc(t.expr)}</td><td>${esc(t.actual ?? '–')}</td><td class="l ${t.state.replace(/ /g, '-')}">${esc(t.state)}</td></tr>`).join('');
  $('errkinds').innerHTML = '<tr><th class="l">kind</th><th>count</th></tr>' +
    Object.entries(f.errors_by_kind || {}).map(([k, v]) => `<tr><td class="l">${esc(k)}</td><td>${v}</td></tr>`).join('');
  $('procs').innerHTML = '<tr><th class="l">process</th><th>CPU %</th><th>RSS MiB</th></tr>' +
    Object.entries(f.processes || {}).map(([k, p]) => `<tr><td class="l">${esc(k)}</td><td>${p.cpu_pct.toFixed(1)}</td><td>${p.rss_mib.toFixed(1)}</td></tr>`).join('');
  $('charts').innerHTML = (f.charts || []).map(c => `<div class="panel">${c}</div>`).join('');
}
document.addEventListener('click', ev => { const id = ev.target.dataset && ev.target.dataset.heal; if (id) heal(id); });
// The run's links and nodes exist once its cluster is up: read again until they do.
async function loadInfo() {
  try { info = await api('GET', '/api/info'); } catch (e) { say('cannot read the run: ' + e.message, false); return; }
  kinds = info.kinds.filter(k => k.on === 'node' ? info.nodes.length : k.on === 'host' ? info.isolated : info.links.length);
  $('scenario').textContent = info.scenario;
  document.title = 'Flowline console: ' + info.scenario;
  const keep = $('kind').value;
  $('kind').innerHTML = kinds.map(k => `<option>${k.kind}</option>`).join('');
  if (kinds.some(k => k.kind === keep)) $('kind').value = keep;
  targets();
}
async function start() {
  $('kind').addEventListener('change', targets);
  await loadInfo();
  if (!info) return;
  const es = new EventSource('/api/stream?token=' + encodeURIComponent(token));
  es.addEventListener('frame', ev => {
    window.lastFrame = JSON.parse(ev.data);
    render(window.lastFrame);
    if (!kinds.length) loadInfo();
  });
  es.onerror = () => { if (!window.lastFrame || window.lastFrame.phase !== 'finished') $('phase').textContent = 'disconnected'; };
}
start();
"#;
