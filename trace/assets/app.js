/*
 * eddy dashboard: the runs of a trace store (list, one run, flame graph, diff
 * of two runs, live tail, overview) read from /api/traces, /api/traces/ID and
 * /api/tail. No framework, no build step.
 *
 * Every text of a run (prompts, answers, tool arguments and results, keys,
 * errors) is attacker-controlled: nodes are made with createElement and
 * filled with textContent only; nothing here parses HTML or evaluates code
 * (the page runs under script-src 'self'). Links are built from
 * encodeURIComponent'd values behind "#".
 *
 * The state is in the hash: #/?FILTERS (the list), #/trace/ID?FILTERS&s=&rid=
 * (one run, with the list it came from), #/diff/A/B?FILTERS, #/overview.
 * Times in nanoseconds are kept as decimal strings (they exceed 2^53) and
 * subtracted as BigInt.
 */
'use strict';

const FILTERS = ['agent', 'key', 'status', 'model', 'tool', 'search', 'since', 'until', 'min_ms',
                 'min_tokens', 'order'];
const PAGE = 20;

// -- DOM and data helpers ---------------------------------------------------------------

/* An element: attrs are DOM properties (className, href, type, value, title,
 * hidden, onclick...), kids are nodes or strings (as text nodes). */
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith('data-')) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const k of kids.flat()) {
    if (k === null || k === undefined || k === false) continue;
    e.appendChild(typeof k === 'object' ? k : document.createTextNode(String(k)));
  }
  return e;
}

/* JSON with *_ns numbers kept exact, as strings (JSON.parse source text access). */
function parse(text) {
  return JSON.parse(text, (k, v, ctx) =>
    (k.endsWith('_ns') && typeof v === 'number') ? (ctx && ctx.source ? ctx.source : String(v)) : v);
}

async function getJSON(url) {
  const r = await fetch(url, {credentials: 'same-origin'});
  const t = await r.text();
  let v;
  try { v = parse(t); } catch (e) { throw new Error(url + ': ' + r.status + ' ' + t.slice(0, 200)); }
  if (!r.ok) throw new Error(url + ': ' + (v && v.error ? v.error : r.status));
  return v;
}

/* Replace E's children with KIDS (null ones left out). */
function fill(e, ...kids) { e.replaceChildren(...kids.flat().filter(k => k !== null && k !== undefined && k !== false)); }

function showError(e) {
  const b = document.getElementById('error');
  b.textContent = String(e && e.message ? e.message : e);
  b.hidden = false;
}

function clearError() { document.getElementById('error').hidden = true; }

const nsToMs = (a, b) => Number(BigInt(a) - BigInt(b)) / 1e6;
const nsDate = ns => new Date(Number(BigInt(ns) / 1000000n));
function fmtTime(ns) {
  const d = nsDate(ns), p = n => String(n).padStart(2, '0');
  return d.getFullYear() + '-' + p(d.getMonth() + 1) + '-' + p(d.getDate()) + ' ' +
    p(d.getHours()) + ':' + p(d.getMinutes()) + ':' + p(d.getSeconds());
}
const fmtMs = ms => ms >= 1000 ? (ms / 1000).toFixed(2) + ' s' : ms.toFixed(1) + ' ms';
const fmtCost = c => (c === null || c === undefined) ? '–' : '$' + Number(c).toFixed(4);

/* The hash as {route: [parts], q: URLSearchParams}. */
function route() {
  const h = location.hash.replace(/^#\/?/, '');
  const i = h.indexOf('?');
  const path = (i < 0 ? h : h.slice(0, i)).split('/').filter(Boolean).map(decodeURIComponent);
  return {path, q: new URLSearchParams(i < 0 ? '' : h.slice(i + 1))};
}

/* The list's own parameters of Q (filters and cursor) as a new URLSearchParams. */
function listParams(q, withCursor) {
  const o = new URLSearchParams();
  for (const k of FILTERS) if (q.get(k)) o.set(k, q.get(k));
  if (withCursor) for (const k of ['after_start_ns', 'after_id', 'back']) if (q.get(k)) o.set(k, q.get(k));
  return o;
}

/* datetime-local text as nanoseconds (a decimal string); '' when empty or bad. */
function localToNs(v) {
  const ms = v ? new Date(v).getTime() : NaN;
  return Number.isFinite(ms) ? (BigInt(ms) * 1000000n).toString() : '';
}

/* The /api/traces query of the list parameters Q. */
function apiQuery(q) {
  const a = new URLSearchParams();
  for (const k of ['agent', 'key', 'status', 'model', 'tool', 'search', 'min_ms', 'min_tokens', 'order'])
    if (q.get(k)) a.set(k, q.get(k));
  if (localToNs(q.get('since'))) a.set('since_ns', localToNs(q.get('since')));
  if (localToNs(q.get('until'))) a.set('until_ns', localToNs(q.get('until')));
  return a;
}

const traceHref = (row, lq) => {
  const q = new URLSearchParams(lq);
  q.set('s', row.start_ns); q.set('rid', row.id);
  return '#/trace/' + encodeURIComponent(row.trace_id) + '?' + q;
};

function statusBadge(s) { return el('span', {className: 'badge ' + (s === 'ok' ? 'ok' : 'error')}, s); }

// -- the list ------------------------------------------------------------------------------

let tail = null; // the live tail's EventSource while the list is shown
let onPicked = null; // the shown list's handler of a (un)picked run
document.addEventListener('eddy-picked', () => { if (onPicked) onPicked(); });

let tailSink = null; // where the tail's runs go: the shown list's table

function stopTail() { if (tail) { tail.close(); tail = null; } tailSink = null; }

function filterForm(q) {
  const f = el('form', {className: 'filters', id: 'filters'});
  const input = (name, label, type, extra) => el('label', {}, label,
    el('input', Object.assign({name, type: type || 'text', value: q.get(name) || ''}, extra || {})));
  const select = (name, label, opts) => {
    const s = el('select', {name}, opts.map(([v, t]) => el('option', {value: v}, t)));
    s.value = q.get(name) || opts[0][0];
    return el('label', {}, label, s);
  };
  f.append(
    input('search', 'search in input/output', 'search', {className: 'search', placeholder: 'words…'}),
    input('agent', 'agent'), input('key', 'key'),
    select('status', 'status', [['', 'any'], ['ok', 'ok'], ['error', 'error']]),
    input('model', 'model'), input('tool', 'tool'),
    input('since', 'started from', 'datetime-local', {step: 1}),
    input('until', 'until', 'datetime-local', {step: 1}),
    input('min_ms', 'min ms', 'number', {min: 0}), input('min_tokens', 'min tokens', 'number', {min: 0}),
    select('order', 'order', [['newest', 'newest first'], ['oldest', 'oldest first']]),
    el('button', {type: 'submit', id: 'apply'}, 'Apply'),
    el('button', {type: 'button', id: 'reset', onclick: () => { location.hash = '#/'; }}, 'Reset'));
  f.onsubmit = ev => {
    ev.preventDefault();
    const o = new URLSearchParams();
    for (const k of FILTERS) {
      const v = f.elements[k].value.trim();
      if (v && !(k === 'order' && v === 'newest')) o.set(k, v);
    }
    location.hash = '#/?' + o;
  };
  return f;
}

function runRow(t, lq, selected, live) {
  const box = el('input', {type: 'checkbox', className: 'pick', title: 'pick for diff',
                           checked: selected.has(t.trace_id)});
  box.onchange = () => {
    if (box.checked) selected.add(t.trace_id); else selected.delete(t.trace_id);
    document.dispatchEvent(new Event('eddy-picked'));
  };
  const tr = el('tr', {className: (t.status === 'ok' ? '' : 'error') + (live ? ' live' : '')},
    el('td', {}, box),
    el('td', {}, el('a', {href: traceHref(t, lq), className: 'open'}, fmtTime(t.start_ns))),
    el('td', {}, t.agent), el('td', {className: 'key'}, t.key), el('td', {}, t.event_id),
    el('td', {}, statusBadge(t.status)),
    el('td', {className: 'num'}, fmtMs(Number(t.duration_ms))),
    el('td', {className: 'num'}, String(t.input_tokens + t.output_tokens)),
    el('td', {className: 'num'}, fmtCost(t.cost)),
    el('td', {className: 'num'}, String(t.llm_calls)), el('td', {className: 'num'}, String(t.tool_calls)),
    el('td', {}, (t.models || []).join(', ')), el('td', {}, (t.tools || []).join(', ')));
  tr.dataset.trace = t.trace_id;
  if (t.error) tr.title = t.error;
  return tr;
}

function runTable(id, caption) {
  const cols = ['', 'started', 'agent', 'key', 'event', 'status', 'time', 'tokens', 'cost', 'llm',
                'tools', 'models', 'tools used'];
  return el('table', {id},
    caption ? el('caption', {className: 'muted'}, caption) : null,
    el('thead', {}, el('tr', {}, cols.map((c, i) => el('th', {className: i >= 6 && i <= 10 ? 'num' : ''}, c)))),
    el('tbody', {}));
}

async function showList(q) {
  const app = document.getElementById('app');
  const lq = listParams(q, true);
  const selected = new Set();
  const diffBtn = el('button', {id: 'diff-picked', disabled: true}, 'Diff the 2 picked runs');
  onPicked = () => { diffBtn.disabled = selected.size !== 2; };
  diffBtn.onclick = () => {
    const [a, b] = [...selected];
    location.hash = '#/diff/' + encodeURIComponent(a) + '/' + encodeURIComponent(b) + '?' + listParams(q);
  };
  const live = runTable('live', 'live: runs stored since this page opened');
  live.hidden = true;
  const tailState = el('span', {id: 'tail-state', className: 'muted'}, 'live tail: connecting…');
  const list = runTable('runs');
  const pager = el('div', {className: 'pager'});
  fill(app, filterForm(q), el('div', {className: 'toolbar'}, diffBtn, tailState), live, list, pager);

  const a = apiQuery(q);
  a.set('limit', String(PAGE + 1)); // one more: is there a next page?
  if (q.get('after_id')) { a.set('after_start_ns', q.get('after_start_ns')); a.set('after_id', q.get('after_id')); }
  const rows = await getJSON('/api/traces?' + a);
  const more = rows.length > PAGE;
  const page = rows.slice(0, PAGE);
  const tb = list.querySelector('tbody');
  for (const t of page) tb.appendChild(runRow(t, lq, selected, false));
  if (!page.length) tb.appendChild(el('tr', {}, el('td', {colSpan: 13, className: 'muted'}, 'no runs match')));

  const back = q.get('back') ? q.get('back').split(',') : [];
  const go = (cursor, newBack) => {
    const o = listParams(q);
    if (cursor) { const [s, i] = cursor.split('_'); o.set('after_start_ns', s); o.set('after_id', i); }
    if (newBack.length) o.set('back', newBack.join(','));
    location.hash = '#/?' + o;
  };
  const here = q.get('after_id') ? q.get('after_start_ns') + '_' + q.get('after_id') : '';
  pager.append(
    el('button', {id: 'first', disabled: !here, onclick: () => go('', [])}, '⇤ first'),
    el('button', {id: 'prev-page', disabled: !here, onclick: () => {
      const b = back.slice(); const c = b.pop(); go(c === '-' ? '' : c, b);
    }}, '← newer'),
    el('span', {className: 'muted', id: 'page-info'}, 'page ' + (back.length + (here ? 2 : 1)) + ', ' + page.length + ' runs'),
    el('button', {id: 'next-page', disabled: !more, onclick: () => {
      const last = page[page.length - 1];
      go(last.start_ns + '_' + last.id, back.concat([here || '-']));
    }}, 'older →'));

  tailSink = {live, state: tailState, lq, selected};
  startTail(tailQuery(q));
}

/* The list's filters the live tail applies too (the others do not narrow new runs). */
function tailQuery(q) {
  const o = new URLSearchParams();
  for (const k of ['agent', 'key', 'status', 'model', 'tool', 'search'])
    if (q.get(k)) o.set(k, q.get(k));
  return o.toString();
}

/* One EventSource while lists are shown (re-rendering a list keeps it); the
 * server ends a stream now and then and the browser reconnects with
 * Last-Event-ID; a refused one (503: too many tails) is tried again in 3 s. */
let tailQ = null; // the filters of the open stream

function startTail(qs) {
  if (typeof EventSource !== 'function') { tailSink.state.textContent = 'live tail: not supported'; return; }
  if (tail && tail.readyState !== EventSource.CLOSED && tailQ === qs) {
    if (tail.readyState === EventSource.OPEN) tailSink.state.textContent = 'live tail: on';
    return;
  }
  if (tail) tail.close(); // another filter: another stream
  tailQ = qs;
  const es = tail = new EventSource('/api/tail' + (qs ? '?' + qs : ''));
  es.onopen = () => { if (tailSink) tailSink.state.textContent = 'live tail: on'; };
  es.onerror = () => {
    if (!tailSink) return;
    tailSink.state.textContent = 'live tail: reconnecting…';
    if (es.readyState === EventSource.CLOSED)
      setTimeout(() => { if (tail === es && tailSink) { tail = null; startTail(tailQ); } }, 3000);
  };
  es.addEventListener('run', ev => {
    if (!tailSink) return;
    const t = parse(ev.data);
    const {live, lq, selected} = tailSink;
    live.hidden = false;
    const lb = live.querySelector('tbody');
    lb.insertBefore(runRow(t, lq, selected, true), lb.firstChild);
    while (lb.children.length > 50) lb.removeChild(lb.lastChild);
  });
}

// -- one run -------------------------------------------------------------------------------

const attr = (s, k) => (s.attributes || {})[k];
const kindOf = s => attr(s, 'gen_ai.operation.name') === 'chat' ? 'chat'
  : attr(s, 'gen_ai.operation.name') === 'execute_tool' ? 'tool' : 'agent';
const isErr = s => s.status && s.status !== 'ok';
const isReplayed = s => attr(s, 'eddy.replayed') === true || attr(s, 'eddy.replayed') === 1;
const spanTokens = s => kindOf(s) === 'chat'
  ? (attr(s, 'gen_ai.usage.input_tokens') || 0) + (attr(s, 'gen_ai.usage.output_tokens') || 0) : 0;
const spanCost = s => Number(attr(s, 'eddy.cost') || 0);

/* Spans as a tree in start order: [{span, depth, kids}] flattened depth-first, and the roots. */
function tree(spans) {
  const byId = new Map(spans.map(s => [s.span_id, {span: s, kids: []}]));
  const roots = [];
  for (const n of byId.values()) {
    const p = n.span.parent_id && byId.get(n.span.parent_id);
    (p ? p.kids : roots).push(n);
  }
  const cmp = (a, b) => (BigInt(a.span.start_ns) < BigInt(b.span.start_ns) ? -1 : 1);
  const flat = [];
  const walk = (n, d) => { n.depth = d; flat.push(n); n.kids.sort(cmp).forEach(k => walk(k, d + 1)); };
  roots.sort(cmp).forEach(r => walk(r, 0));
  return {flat, roots};
}

function bounds(spans) {
  let t0 = null, t1 = null;
  for (const s of spans) {
    if (t0 === null || BigInt(s.start_ns) < BigInt(t0)) t0 = s.start_ns;
    if (t1 === null || BigInt(s.end_ns) > BigInt(t1)) t1 = s.end_ns;
  }
  return {t0, total: Math.max(nsToMs(t1, t0), 1e-6)};
}

function partsText(parts) {
  return (parts || []).map(p => p.type === 'text' ? p.content
    : p.type === 'tool_call' ? 'call ' + p.name + ' ' + p.arguments
    : p.type === 'tool_call_response' ? 'result ' + (typeof p.response === 'string' ? p.response : JSON.stringify(p.response))
    : JSON.stringify(p)).join('\n');
}

function pretty(v) {
  if (typeof v !== 'string') return JSON.stringify(v, null, 2);
  try { return JSON.stringify(JSON.parse(v), null, 2); } catch (e) { return v; }
}

function message(role, parts) {
  const m = el('div', {className: 'msg ' + role}, el('div', {className: 'role'}, role));
  for (const p of parts || []) {
    if (p.type === 'text') m.appendChild(el('div', {className: 'text'}, p.content));
    else if (p.type === 'tool_call')
      m.appendChild(el('div', {className: 'toolcall'}, el('b', {}, '→ ' + p.name), ' ',
        el('span', {className: 'kv'}, p.id || ''), el('pre', {}, pretty(p.arguments))));
    else if (p.type === 'tool_call_response')
      m.appendChild(el('div', {className: 'toolcall'}, el('b', {}, '← result'), ' ',
        el('span', {className: 'kv'}, p.id || ''), el('pre', {}, pretty(p.response))));
    else m.appendChild(el('pre', {}, JSON.stringify(p)));
  }
  return m;
}

function stepView(n, t0) {
  const s = n.span, k = kindOf(s);
  const d = el('div', {className: 'step ' + k + (isErr(s) ? ' error' : ''), id: 'step-' + s.span_id},
    el('div', {className: 'step-head'}, s.name, isErr(s) ? el('span', {className: 'badge error'}, 'error') : null,
      isReplayed(s) ? el('span', {className: 'badge replayed'}, 'replayed') : null,
      el('span', {className: 'kv'}, '  +' + fmtMs(nsToMs(s.start_ns, t0)) + ', ' + fmtMs(nsToMs(s.end_ns, s.start_ns)))));
  if (s.error) d.appendChild(el('div', {className: 'err'}, s.error));
  if (k === 'chat') {
    const kv = ['gen_ai.usage.input_tokens', 'gen_ai.usage.output_tokens', 'eddy.cost',
                'eddy.llm.wait_ms', 'eddy.llm.attempts', 'gen_ai.response.finish_reasons']
      .filter(a => attr(s, a) !== undefined).map(a => a.replace(/^(gen_ai|eddy)\./, '') + '=' + JSON.stringify(attr(s, a)));
    d.appendChild(el('div', {className: 'kv'}, kv.join('  ')));
    const sys = attr(s, 'gen_ai.system_instructions');
    if (sys) d.appendChild(message('system', Array.isArray(sys) ? sys : [{type: 'text', content: String(sys)}]));
    for (const m of attr(s, 'gen_ai.input.messages') || []) d.appendChild(message(m.role || '?', m.parts));
    for (const m of attr(s, 'gen_ai.output.messages') || []) {
      const o = message(m.role || 'assistant', m.parts);
      o.classList.add('output');
      o.firstChild.textContent += ' (answer' + (m.finish_reason ? ', ' + m.finish_reason : '') + ')';
      d.appendChild(o);
    }
  } else if (k === 'tool') {
    const a = attr(s, 'gen_ai.tool.call.arguments'), r = attr(s, 'gen_ai.tool.call.result');
    if (a !== undefined) d.append(el('div', {className: 'kv'}, 'arguments'), el('pre', {className: 'args'}, pretty(a)));
    if (r !== undefined) d.append(el('div', {className: 'kv'}, 'result'), el('pre', {className: 'result'}, pretty(r)));
  }
  return d;
}

function waterfall(flat, b) {
  const wf = el('div', {className: 'wf', id: 'waterfall'});
  for (const n of flat) {
    const s = n.span, k = kindOf(s);
    const left = nsToMs(s.start_ns, b.t0) / b.total * 100, dur = nsToMs(s.end_ns, s.start_ns);
    const bar = el('div', {className: 'wf-bar ' + k + (isErr(s) ? ' error' : '') + (isReplayed(s) ? ' replayed' : '')});
    bar.style.left = left + '%';
    bar.style.width = Math.max(dur / b.total * 100, 0.2) + '%';
    const ms = el('span', {className: 'wf-ms'}, fmtMs(dur));
    ms.style.left = 'calc(' + Math.min(left + dur / b.total * 100, 100) + '% + 4px)';
    const name = el('div', {className: 'wf-name', title: s.name}, s.name,
      isReplayed(s) ? el('span', {className: 'badge replayed'}, 'replayed') : null);
    name.style.paddingLeft = (6 + 14 * n.depth) + 'px';
    const row = el('div', {className: 'wf-row' + (isErr(s) ? ' error' : '')}, name, el('div', {className: 'wf-track'}, bar, ms));
    row.dataset.span = s.span_id;
    row.onclick = () => focusStep(s.span_id);
    wf.appendChild(row);
  }
  return wf;
}

function focusStep(id) {
  const st = document.getElementById('step-' + id);
  if (!st) return;
  st.scrollIntoView({block: 'center'});
  st.classList.add('flash');
  setTimeout(() => st.classList.remove('flash'), 1200);
}

/* Flame graph boxes of the tree, width by MODE: time (positioned by start/end),
 * tokens or cost (each child a share of its parent by its own subtree's value). */
function flame(t, b, mode) {
  const box = el('div', {className: 'flame', id: 'flame'});
  box.dataset.mode = mode;
  let depth = 0;
  const value = n => n.value !== undefined ? n.value
    : (n.value = (mode === 'tokens' ? spanTokens(n.span) : spanCost(n.span)) + n.kids.reduce((a, k) => a + value(k), 0));
  const place = (n, x, w, d) => {
    depth = Math.max(depth, d + 1);
    const s = n.span, k = kindOf(s);
    const label = s.name + ' · ' + (mode === 'time' ? fmtMs(nsToMs(s.end_ns, s.start_ns))
      : mode === 'tokens' ? value(n) + ' tok' : fmtCost(value(n)));
    const f = el('div', {className: 'flame-box ' + k + (isErr(s) ? ' error' : ''), title: label}, label);
    f.style.left = x + '%'; f.style.width = Math.max(w, 0) + '%'; f.style.top = (d * 24) + 'px';
    f.dataset.span = s.span_id;
    f.onclick = () => focusStep(s.span_id);
    box.appendChild(f);
    let cx = x;
    for (const c of n.kids) {
      if (mode === 'time') {
        place(c, nsToMs(c.span.start_ns, b.t0) / b.total * 100, nsToMs(c.span.end_ns, c.span.start_ns) / b.total * 100, d + 1);
      } else {
        const cw = value(n) > 0 ? w * value(c) / value(n) : 0;
        place(c, cx, cw, d + 1);
        cx += cw;
      }
    }
  };
  if (mode === 'time') for (const r of t.roots) place(r, nsToMs(r.span.start_ns, b.t0) / b.total * 100, nsToMs(r.span.end_ns, r.span.start_ns) / b.total * 100, 0);
  else {
    const total = t.roots.reduce((a, r) => a + value(r), 0);
    let x = 0;
    for (const r of t.roots) { const w = total > 0 ? 100 * value(r) / total : 0; place(r, x, w, 0); x += w; }
    if (total === 0) box.appendChild(el('div', {className: 'muted'}, 'no ' + mode + ' recorded in this run'));
  }
  box.style.height = (depth * 24 + 4) + 'px';
  return box;
}

function rollup(spans) {
  let input = 0, output = 0, cost = 0, priced = false, llm = 0, tools = 0, errors = 0, replayed = 0;
  for (const s of spans) {
    if (kindOf(s) === 'chat') {
      llm++; input += attr(s, 'gen_ai.usage.input_tokens') || 0; output += attr(s, 'gen_ai.usage.output_tokens') || 0;
      if (attr(s, 'eddy.cost') !== undefined) { priced = true; cost += Number(attr(s, 'eddy.cost')); }
    }
    if (kindOf(s) === 'tool') tools++;
    if (isErr(s)) errors++;
    if (isReplayed(s)) replayed++;
  }
  return {input, output, cost: priced ? cost : null, llm, tools, errors, replayed};
}

async function showTrace(id, q) {
  const app = document.getElementById('app');
  const t = await getJSON('/api/traces/' + encodeURIComponent(id));
  const spans = t.spans || [];
  const tr = tree(spans), b = bounds(spans), r = rollup(spans);
  const root = tr.roots.length ? tr.roots[0].span : null;
  const lq = listParams(q, true);
  const item = (k, v) => el('div', {}, el('span', {}, k), el('span', {className: 'v-' + k.replace(/\W/g, '')}, v));
  const nav = el('div', {className: 'toolbar'},
    el('a', {href: '#/?' + lq, id: 'back'}, '← runs'),
    el('button', {id: 'prev-run', disabled: true}, '↑ previous'),
    el('button', {id: 'next-run', disabled: true}, 'next ↓'),
    el('a', {id: 'diff-link', href: '#/diff/' + encodeURIComponent(t.trace_id) + '?' + listParams(q)}, 'diff with another run of this key…'));
  const mode = ['time', 'tokens', 'cost'].includes(q.get('flame')) ? q.get('flame') : 'time';
  const view = q.get('view') === 'flame' ? 'flame' : 'waterfall';
  const setQ = (k, v) => { const o = new URLSearchParams(q); o.set(k, v); location.hash = '#/trace/' + encodeURIComponent(id) + '?' + o; };
  const tabs = el('div', {className: 'toolbar'},
    el('button', {id: 'tab-waterfall', className: view === 'waterfall' ? 'on' : '', onclick: () => setQ('view', 'waterfall')}, 'Waterfall'),
    el('button', {id: 'tab-flame', className: view === 'flame' ? 'on' : '', onclick: () => setQ('view', 'flame')}, 'Flame graph'),
    view === 'flame' ? el('span', {className: 'muted'}, 'width by:') : null,
    view === 'flame' ? ['time', 'tokens', 'cost'].map(m =>
      el('button', {id: 'flame-' + m, className: mode === m ? 'on' : '', onclick: () => setQ('flame', m)}, m)) : null);
  fill(app, nav,
    el('h2', {}, 'run ', el('span', {id: 'trace-id'}, t.trace_id), ' ', statusBadge(t.status),
      r.replayed ? el('span', {className: 'badge replayed'}, r.replayed + ' replayed') : null),
    el('div', {className: 'summary', id: 'summary'},
      item('agent', t.agent),
      el('div', {}, el('span', {}, 'key'), el('a', {className: 'v-key', id: 'key-link', href: keyHref(t.key, t.agent)}, t.key)),
      item('event', t.event_id),
      item('started', root ? fmtTime(root.start_ns) : '–'), item('duration', fmtMs(b.total)),
      item('tokens', r.input + ' in / ' + r.output + ' out'), item('cost', fmtCost(r.cost)),
      item('llm calls', String(r.llm)), item('tool calls', String(r.tools)), item('errors', String(r.errors))),
    root && root.error ? el('div', {className: 'banner', id: 'run-error'}, root.error) : null,
    tabs,
    view === 'flame' ? flame(tr, b, mode) : waterfall(tr.flat, b),
    el('h2', {}, 'steps'),
    el('div', {id: 'steps'}, tr.flat.map(n => stepView(n, b.t0))));
  wireNeighbours(id, q);
  wireDiffPicker(t, q);
}

/* prev/next within the list the run was opened from (its filters and order). */
async function wireNeighbours(id, q) {
  if (!q.get('s') || !q.get('rid')) return;
  const a = apiQuery(q);
  const oldest = q.get('order') === 'oldest';
  const one = async ord => {
    const p = new URLSearchParams(a);
    p.set('order', ord); p.set('limit', '1'); p.set('after_start_ns', q.get('s')); p.set('after_id', q.get('rid'));
    return (await getJSON('/api/traces?' + p))[0];
  };
  const [next, prev] = await Promise.all([one(oldest ? 'oldest' : 'newest'), one(oldest ? 'newest' : 'oldest')]);
  const lq = listParams(q);
  for (const [btn, row] of [['next-run', next], ['prev-run', prev]]) {
    const bt = document.getElementById(btn);
    if (!bt || !row) continue;
    bt.disabled = false;
    bt.onclick = () => { location.hash = traceHref(row, lq); };
  }
}

/* "diff with another run of this key": the other runs of the key, each a link. */
async function wireDiffPicker(t, q) {
  const link = document.getElementById('diff-link');
  link.onclick = async ev => {
    ev.preventDefault();
    const rows = await getJSON('/api/traces?limit=50&key=' + encodeURIComponent(t.key) + '&agent=' + encodeURIComponent(t.agent));
    const others = rows.filter(r => r.trace_id !== t.trace_id);
    const ul = el('ul', {id: 'diff-choices'}, others.length ? others.map(r => el('li', {},
      el('a', {href: '#/diff/' + encodeURIComponent(t.trace_id) + '/' + encodeURIComponent(r.trace_id) + '?' + listParams(q)},
        fmtTime(r.start_ns) + ' ' + r.event_id + ' (' + r.status + ')'))) : el('li', {className: 'muted'}, 'no other run of this key'));
    link.replaceWith(ul);
  };
}

// -- diff of two runs ----------------------------------------------------------------------

/* The steps of a run (spans but the root), in start order, as comparable fields. */
function steps(t) {
  const tr = tree(t.spans || []);
  return tr.flat.filter(n => n.depth > 0).map(n => {
    const s = n.span, k = kindOf(s);
    const ins = attr(s, 'gen_ai.input.messages') || [];
    const last = ins.length ? ins[ins.length - 1] : null;
    return {name: s.name, fields: {
      prompt: k === 'chat' ? [attr(s, 'gen_ai.system_instructions') ? partsText(attr(s, 'gen_ai.system_instructions')) : '',
                              last ? last.role + ': ' + partsText(last.parts) : ''].filter(Boolean).join('\n') : '',
      output: k === 'chat' ? (attr(s, 'gen_ai.output.messages') || []).map(m => partsText(m.parts)).join('\n') : '',
      arguments: k === 'tool' ? pretty(attr(s, 'gen_ai.tool.call.arguments') ?? '') : '',
      result: k === 'tool' ? pretty(attr(s, 'gen_ai.tool.call.result') ?? '') : '',
      error: s.error || '',
      tokens: k === 'chat' ? (attr(s, 'gen_ai.usage.input_tokens') || 0) + ' in / ' + (attr(s, 'gen_ai.usage.output_tokens') || 0) + ' out' : '',
      latency: fmtMs(nsToMs(s.end_ns, s.start_ns)),
    }};
  });
}

/* Align A and B by step name (longest common subsequence): [[a|null, b|null]]. */
function align(A, B) {
  const L = Array.from({length: A.length + 1}, () => new Array(B.length + 1).fill(0));
  for (let i = A.length - 1; i >= 0; i--)
    for (let j = B.length - 1; j >= 0; j--)
      L[i][j] = A[i].name === B[j].name ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
  const out = [];
  let i = 0, j = 0;
  while (i < A.length || j < B.length) {
    if (i < A.length && j < B.length && A[i].name === B[j].name) out.push([A[i++], B[j++]]);
    else if (j >= B.length || (i < A.length && L[i + 1][j] >= L[i][j + 1])) out.push([A[i++], null]);
    else out.push([null, B[j++]]);
  }
  return out;
}

async function showDiff(a, bId, q) {
  const app = document.getElementById('app');
  if (!bId) { // one run given: choose the other among its key's runs
    const t = await getJSON('/api/traces/' + encodeURIComponent(a));
    fill(app, el('p', {}, 'Choose the run to compare with:'), el('a', {id: 'diff-link', href: '#'}, 'runs of this key'));
    wireDiffPicker(t, q);
    document.getElementById('diff-link').click();
    return;
  }
  const [A, B] = await Promise.all([getJSON('/api/traces/' + encodeURIComponent(a)), getJSON('/api/traces/' + encodeURIComponent(bId))]);
  const head = (t, r) => el('div', {}, el('a', {href: '#/trace/' + encodeURIComponent(t.trace_id) + '?' + listParams(q)}, t.trace_id), ' ',
    statusBadge(t.status), el('div', {className: 'kv'}, 'key ' + t.key + ', event ' + t.event_id + ', ' + r.input + '/' + r.output + ' tokens, ' +
      fmtCost(r.cost) + ', ' + fmtMs(bounds(t.spans || []).total)));
  const tbl = el('table', {className: 'diff', id: 'diff'},
    el('thead', {}, el('tr', {}, el('th', {}, 'step'), el('th', {}, head(A, rollup(A.spans || []))), el('th', {}, head(B, rollup(B.spans || []))))),
    el('tbody', {}));
  const tb = tbl.querySelector('tbody');
  let changed = 0;
  align(steps(A), steps(B)).forEach(([x, y], i) => {
    tb.appendChild(el('tr', {className: 'step-row'}, el('td', {className: 'name', colSpan: 3}, (i + 1) + '. ' + (x || y).name +
      (!x ? '  (only in the second run)' : !y ? '  (only in the first run)' : ''))));
    for (const f of ['prompt', 'output', 'arguments', 'result', 'error', 'tokens', 'latency']) {
      const u = x ? x.fields[f] : '', v = y ? y.fields[f] : '';
      if (!u && !v) continue;
      const diff = f !== 'latency' && u !== v;
      if (diff) changed++;
      const cell = (s, present) => el('td', {className: !present ? 'missing' : diff ? 'changed' : ''}, el('pre', {}, s));
      tb.appendChild(el('tr', {className: 'field-' + f}, el('td', {className: 'name'}, f), cell(u, !!x), cell(v, !!y)));
    }
  });
  fill(app, el('div', {className: 'toolbar'}, el('a', {href: '#/?' + listParams(q)}, '← runs')),
    el('h2', {}, 'diff of two runs'), el('p', {id: 'diff-summary', className: 'muted'}, changed + ' fields differ (latency is shown, not counted)'), tbl);
}

// -- overview --------------------------------------------------------------------------------

function chart(title, buckets, val, fmt, errVal) {
  const max = Math.max(...buckets.map(val), 1e-9);
  const bars = el('div', {className: 'bars'});
  for (const bk of buckets) {
    const bar = el('div', {className: 'bar' + (errVal && errVal(bk) ? ' err' : ''), title: fmtTime(bk.t) + ': ' + fmt(val(bk))});
    bar.style.height = (100 * val(bk) / max) + '%';
    bars.appendChild(bar);
  }
  return el('div', {className: 'chart'}, el('div', {}, title, el('span', {className: 'muted'}, '  max ' + fmt(max))), bars,
    el('div', {className: 'axis'}, el('span', {}, buckets.length ? fmtTime(buckets[0].t) : ''), el('span', {}, buckets.length ? fmtTime(buckets[buckets.length - 1].t) : '')));
}

async function showOverview() {
  const app = document.getElementById('app');
  const rows = await getJSON('/api/traces?limit=10000');
  if (!rows.length) { fill(app, el('p', {className: 'muted'}, 'no runs yet')); return; }
  let lo = null, hi = null;
  for (const r of rows) {
    if (lo === null || BigInt(r.start_ns) < lo) lo = BigInt(r.start_ns);
    if (hi === null || BigInt(r.start_ns) > hi) hi = BigInt(r.start_ns);
  }
  const n = 40, span = (hi - lo) / BigInt(n) + 1n;
  const buckets = Array.from({length: n}, (_, i) => ({t: (lo + span * BigInt(i)).toString(), runs: 0, errors: 0, ms: 0, tokens: 0, cost: 0}));
  for (const r of rows) {
    const bk = buckets[Number((BigInt(r.start_ns) - lo) / span)];
    bk.runs++; bk.errors += r.status === 'ok' ? 0 : 1; bk.ms += Number(r.duration_ms);
    bk.tokens += r.input_tokens + r.output_tokens; bk.cost += Number(r.cost || 0);
  }
  const tot = rows.reduce((a, r) => ({runs: a.runs + 1, errors: a.errors + (r.status === 'ok' ? 0 : 1),
    tokens: a.tokens + r.input_tokens + r.output_tokens, cost: a.cost + Number(r.cost || 0)}), {runs: 0, errors: 0, tokens: 0, cost: 0});
  const each = ms => fmtMs(ms);
  fill(app, el('h2', {}, 'overview of the newest ' + rows.length + ' runs'),
    el('div', {className: 'summary', id: 'overview-totals'},
      el('div', {}, el('span', {}, 'runs'), String(tot.runs)), el('div', {}, el('span', {}, 'errors'), String(tot.errors)),
      el('div', {}, el('span', {}, 'tokens'), String(tot.tokens)), el('div', {}, el('span', {}, 'cost'), fmtCost(tot.cost))),
    chart('runs', buckets, b => b.runs, String, b => b.errors > 0),
    chart('errors', buckets, b => b.errors, String),
    chart('mean run latency', buckets, b => b.runs ? b.ms / b.runs : 0, each),
    chart('tokens', buckets, b => b.tokens, String),
    chart('cost', buckets, b => b.cost, fmtCost));
}

// -- a key: its memory, history and runs -----------------------------------------------------

const keyHref = (key, agent) => '#/key?' + new URLSearchParams(agent ? {key, agent} : {key});

/* A stored history entry's parts (eddy's neutral form) as the chat view's. */
function historyParts(parts) {
  return (parts || []).map(p => p.type === 'text' ? {type: 'text', content: p.text}
    : p.type === 'tool_call' ? {type: 'tool_call', id: p.id, name: p.name, arguments: p.arguments}
    : p.type === 'tool_result' ? {type: 'tool_call_response', id: p.id, response: p.content}
    : p);
}

async function showKey(q) {
  const app = document.getElementById('app');
  const key = q.get('key') || '', agent = q.get('agent');
  const u = new URLSearchParams(agent ? {key, agent} : {key});
  const k = await getJSON('/api/key?' + u);
  const runs = runTable('key-runs', 'its newest runs');
  const body = runs.querySelector('tbody');
  for (const t of k.runs || []) body.appendChild(runRow(t, 'key=' + encodeURIComponent(key), new Set(), false));
  const history = (k.history || []).map(h => el('div', {className: 'history-run'},
    el('div', {className: 'muted'}, 'run ' + h.seq),
    (h.messages || []).map(m => message(m.role, historyParts(m.parts)))));
  fill(app,
    el('div', {className: 'toolbar'}, el('a', {href: '#/?key=' + encodeURIComponent(key)}, '← its runs in the list')),
    el('h2', {}, 'key ', el('span', {id: 'key-name'}, key), agent ? el('span', {className: 'muted'}, ' of ' + agent) : null),
    el('h2', {}, 'memory'),
    k.memory === null ? el('p', {className: 'muted', id: 'key-memory'}, k.state || 'no memory document yet')
                      : el('pre', {id: 'key-memory'}, JSON.stringify(k.memory, null, 2)),
    el('h2', {}, 'history (' + (k.history || []).length + ' runs kept)'),
    el('div', {id: 'key-history'}, history),
    el('h2', {}, 'runs'), runs);
}

// -- routing ---------------------------------------------------------------------------------

async function render() {
  clearError();
  const {path, q} = route();
  if (path[0] !== undefined) stopTail();
  document.getElementById('nav-runs').className = path[0] === undefined ? 'on' : '';
  try {
    if (path[0] === 'trace' && path[1]) await showTrace(path[1], q);
    else if (path[0] === 'diff' && path[1]) await showDiff(path[1], path[2], q);
    else if (path[0] === 'overview') await showOverview();
    else if (path[0] === 'key') await showKey(q);
    else await showList(q);
  } catch (e) {
    showError(e);
  }
  document.body.dataset.ready = location.hash; // the browser tests wait for it
}

window.addEventListener('hashchange', render);
render();
