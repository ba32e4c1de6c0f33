#!/usr/bin/env node
/*
 * The dashboard in a real browser: Playwright (playwright-core from npm, in
 * .cache/playwright, installed by tests/browser/playwright.sh) drives Debian's
 * Chromium against `eddy run --dashboard=127.0.0.1:0` on a job that talks to
 * the mock LLM. Checks the list's filters, search, order and paging and that
 * the URL keeps them, one run's waterfall, chat view and prev/next, the flame
 * graph, the diff of two runs of one key, the live tail, the overview, and that
 * hostile text in prompts and keys is shown as text (no dialog, no request to
 * x, no CSP violation). Screenshots go to tests/browser/out/.
 *
 *     node tests/browser/dashboard_test.js --build build
 */
'use strict';
const assert = require('node:assert/strict');
const cp = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..', '..');
const OUT = path.join(__dirname, 'out');
const BUILD = path.resolve(ROOT, process.argv[process.argv.indexOf('--build') + 1] || 'build');
let chromium;
try {
  ({chromium} = require(path.join(ROOT, '.cache', 'playwright', 'node_modules', 'playwright-core')));
} catch (e) {
  console.error('dashboard_test: playwright-core is missing: run sh tests/browser/playwright.sh');
  process.exit(1);
}

const XSS = '<script>alert(1)</script> <img src=x onerror=alert(2)>';
const XSS_KEY = '<img src=x onerror=alert(3)>';
const SCRIPT = {rules: [
  {when: {last_user_contains: 'FAIL'}, fault: {status: 400, error_code: 'bad'}},
  {when: {last_role: 'tool'}, reply: 'order: ${tool}'},
  {when: {last_user_contains: 'A1042'}, tool_calls: [{name: 'lookup_order', arguments: {order_id: 'A1042'}}]},
  {when: {last_user_contains: 'Z9999'}, tool_calls: [{name: 'lookup_order', arguments: {order_id: 'Z9999'}}]},
  {reply: 'fine'}]};
const TEXTS = ['Where is A1042?', 'and Z9999?', 'hello', 'FAIL please'];
const N = 26; // e0..e25, and one hostile event: 27 runs, two pages of 20

function job(base) {
  return `job: t
key: customer_id
models:
  default:
    base_url: ${base}
    api_key: sk-test-SECRET-9f8e7d
    model: mock-model
    retry: { attempts: 1 }
    timeout: 5s
agents:
  support:
    prompt: { system: "You help {{key}}.", user: "{{event.text}}" }
    tools: [ tools/lookup_order.lua ]
    budget: { turns: 6 }
`;
}

const sleep = ms => new Promise(r => setTimeout(r, ms));

async function waitFor(cond, what, ms = 20000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > end) throw new Error('timed out waiting for ' + what);
    await sleep(50);
  }
}

async function api(url, q) {
  const r = await fetch(url + 'api/traces?' + new URLSearchParams(Object.assign({limit: '1000'}, q)));
  assert.equal(r.status, 200);
  return r.json();
}

async function main() {
  for (const bin of ['eddy', 'mockllm'])
    if (!fs.existsSync(path.join(BUILD, bin))) throw new Error(path.join(BUILD, bin) + ' is missing: make BUILD=' + BUILD + ' all');
  fs.mkdirSync(OUT, {recursive: true});
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'eddy-browser-'));
  const dir = path.join(tmp, 'job');
  fs.cpSync(path.join(ROOT, 'examples', 'order-support'), dir, {recursive: true, filter: s => !s.includes('.eddy')});
  fs.writeFileSync(path.join(tmp, 'script.json'), JSON.stringify(SCRIPT));
  const procs = [];
  let browser;
  try {
    const mock = cp.spawn(path.join(BUILD, 'mockllm'), ['--script', path.join(tmp, 'script.json'), '--port', '0',
      '--port-file', path.join(tmp, 'mock.port')], {stdio: 'ignore'});
    procs.push(mock);
    const port = await waitFor(() => { try { return fs.readFileSync(path.join(tmp, 'mock.port'), 'utf8').trim(); } catch (e) { return ''; } }, 'mockllm');
    fs.writeFileSync(path.join(dir, 'job.yaml'), job('http://127.0.0.1:' + port + '/v1'));
    const eddy = cp.spawn(path.join(BUILD, 'eddy'), ['run', path.join(dir, 'job.yaml'), '--input', '-',
      '--output', path.join(tmp, 'out.jsonl'), '--dashboard=127.0.0.1:0'], {stdio: ['pipe', 'ignore', 'pipe']});
    procs.push(eddy);
    let stderr = '';
    eddy.stderr.on('data', d => { stderr += d; });
    const url = await waitFor(() => (stderr.match(/dashboard and metrics at (http:\/\/\S+)/) || [])[1], 'the dashboard URL');
    const send = evs => eddy.stdin.write(evs.map(e => JSON.stringify(e) + '\n').join(''));
    const evs = [];
    for (let i = 0; i < N; i++) evs.push({id: 'e' + i, customer_id: 'C' + (i % 5), text: TEXTS[i % 4]});
    evs.push({id: 'hostile', customer_id: XSS_KEY, text: 'please ' + XSS});
    send(evs);
    await waitFor(async () => (await api(url, {})).length === N + 1, 'all runs stored');

    browser = await chromium.launch({executablePath: '/usr/bin/chromium', args: ['--no-sandbox']});
    const page = await browser.newPage({viewport: {width: 1400, height: 900}});
    const dialogs = [], badRequests = [], problems = [];
    page.on('dialog', d => { dialogs.push(d.message()); d.dismiss(); });
    page.on('request', r => { if (/\/x($|\?)/.test(r.url())) badRequests.push(r.url()); });
    page.on('pageerror', e => problems.push('page error: ' + e.message));
    page.on('console', m => { if (m.type() === 'error' || /Content.Security.Policy/i.test(m.text())) problems.push('console: ' + m.text() + ' ' + (m.location() && m.location().url)); });
    const shot = name => page.screenshot({path: path.join(OUT, name + '.png'), fullPage: true});
    const ready = () => page.waitForFunction(() => document.body.dataset.ready === location.hash);
    const texts = sel => page.$$eval(sel, es => es.map(e => e.textContent));
    const go = async hash => { await page.evaluate(h => { location.hash = h; }, hash); await ready(); };
    const passed = [];
    const step = async (name, fn) => { await fn(); passed.push(name); console.log('ok  ' + name); };

    await step('list: the newest 20 runs, paged with the cursor', async () => {
      await page.goto(url);
      await ready();
      const all = await api(url, {});
      assert.equal((await page.$$('#runs tbody tr')).length, 20);
      const first = await page.$$eval('#runs tbody tr', rs => rs.map(r => r.dataset.trace));
      assert.deepEqual(first, all.slice(0, 20).map(r => r.trace_id));
      await page.click('#next-page');
      await ready();
      const second = await page.$$eval('#runs tbody tr', rs => rs.map(r => r.dataset.trace));
      assert.deepEqual(second, all.slice(20).map(r => r.trace_id));
      assert.match(await page.evaluate(() => location.hash), /after_id=/);
      await page.click('#prev-page');
      await ready();
      assert.deepEqual(await page.$$eval('#runs tbody tr', rs => rs.map(r => r.dataset.trace)), first);
      await shot('list');
    });

    await step('list: oldest first', async () => {
      await page.selectOption('#filters select[name=order]', 'oldest');
      await page.click('#apply');
      await ready();
      const oldest = await api(url, {order: 'oldest', limit: '20'});
      assert.deepEqual(await page.$$eval('#runs tbody tr', rs => rs.map(r => r.dataset.trace)), oldest.map(r => r.trace_id));
      await go('#/');
    });

    await step('list: two filters (key, status) combine with AND, kept in the URL and on reload', async () => {
      await page.fill('#filters input[name=key]', 'C0');
      await page.selectOption('#filters select[name=status]', 'ok');
      await page.click('#apply');
      await ready();
      const want = (await api(url, {key: 'C0', status: 'ok'})).map(r => r.trace_id);
      assert.ok(want.length >= 2 && want.length < 6, 'C0 has ok runs: ' + want.length);
      const got = () => page.$$eval('#runs tbody tr', rs => rs.map(r => r.dataset.trace));
      assert.deepEqual(await got(), want);
      assert.deepEqual([...new Set(await texts('#runs tbody td.key'))], ['C0']);
      const hash = await page.evaluate(() => location.hash);
      assert.match(hash, /key=C0/);
      assert.match(hash, /status=ok/);
      await page.reload();
      await ready();
      assert.deepEqual(await got(), want);
      assert.equal(await page.inputValue('#filters input[name=key]'), 'C0');
      assert.equal(await page.inputValue('#filters select[name=status]'), 'ok');
      await shot('list-filtered');
    });

    await step('list: more filters (model, tool, min tokens, time range)', async () => {
      await go('#/?tool=lookup_order&model=default&min_tokens=50');
      const want = (await api(url, {tool: 'lookup_order', model: 'default', min_tokens: '50'})).map(r => r.trace_id);
      assert.ok(want.length > 0);
      assert.deepEqual(await page.$$eval('#runs tbody tr', rs => rs.map(r => r.dataset.trace)), want);
      await go('#/?until=2000-01-01T00:00');
      assert.equal(await page.textContent('#runs tbody'), 'no runs match');
    });

    await step('list: search a word of the outputs', async () => {
      await go('#/');
      await page.fill('#filters input[name=search]', 'delivery');
      await page.click('#apply');
      await ready();
      const want = (await api(url, {search: 'delivery'})).map(r => r.trace_id);
      assert.ok(want.length > 0 && want.length < N);
      assert.deepEqual(await page.$$eval('#runs tbody tr', rs => rs.map(r => r.dataset.trace)), want.slice(0, 20));
      await shot('search');
    });

    let c0;
    await step('trace: waterfall, chat view, tool call, errors, prev/next keep the filter', async () => {
      await go('#/?key=C0&tool=lookup_order&search=A1042');
      c0 = await api(url, {key: 'C0', tool: 'lookup_order', search: 'A1042'});
      assert.ok(c0.length >= 2, 'C0 runs with the tool: ' + c0.length);
      await page.click('#runs tbody tr:first-child a.open');
      await ready();
      const tr = await (await fetch(url + 'api/traces/' + c0[0].trace_id)).json();
      assert.equal(await page.textContent('#trace-id'), c0[0].trace_id);
      assert.equal((await page.$$('#waterfall .wf-row')).length, tr.spans.length);
      const bars = await page.$$eval('#waterfall .wf-bar', bs => bs.map(b => [parseFloat(b.style.left), parseFloat(b.style.width)]));
      assert.equal(bars[0][0], 0); // the root starts the run
      assert.ok(bars.every(([l, w]) => l >= 0 && l <= 100 && w > 0 && l + w <= 100.5), JSON.stringify(bars));
      assert.ok(bars.slice(1).some(([l]) => l > 0), 'later steps start later');
      assert.ok((await texts('.msg.system .text')).includes('You help C0.'));
      assert.ok((await texts('.msg.user .text')).includes('Where is A1042?'));
      assert.ok((await texts('.toolcall b')).some(t => t.includes('lookup_order')));
      assert.match((await texts('pre.result')).join(''), /out for delivery/);
      const tokens = tr.spans.filter(s => s.name.startsWith('chat')).reduce((a, s) =>
        a + s.attributes['gen_ai.usage.input_tokens'], 0);
      assert.match(await page.textContent('#summary'), new RegExp(tokens + ' in /'));
      assert.equal(await page.$('#run-error'), null);
      assert.doesNotMatch(await page.textContent('main'), /null|undefined|NaN/);
      await shot('trace');
      await page.waitForFunction(() => !document.getElementById('next-run').disabled);
      await page.click('#next-run');
      await ready();
      assert.equal(await page.textContent('#trace-id'), c0[1].trace_id);
      assert.match(await page.evaluate(() => location.hash), /key=C0/);
      await page.waitForFunction(() => !document.getElementById('prev-run').disabled);
      await page.click('#prev-run');
      await ready();
      assert.equal(await page.textContent('#trace-id'), c0[0].trace_id);
      // a failed run: its error is shown, the failed span marked
      const bad = (await api(url, {key: 'C1', status: 'error'}))[0] || (await api(url, {status: 'error'}))[0];
      await go('#/trace/' + bad.trace_id);
      assert.match(await page.textContent('#run-error'), /HTTP 400/);
      assert.ok((await page.$$('#waterfall .wf-row.error')).length >= 1);
      assert.ok((await page.$$('#steps .step.error')).length >= 1);
      await shot('trace-error');
    });

    await step('flame graph: by time, by tokens', async () => {
      await go('#/trace/' + c0[0].trace_id + '?key=C0');
      await page.click('#tab-flame');
      await ready();
      const tr = await (await fetch(url + 'api/traces/' + c0[0].trace_id)).json();
      assert.equal(await page.getAttribute('#flame', 'data-mode'), 'time');
      assert.equal((await page.$$('#flame .flame-box')).length, tr.spans.length);
      await shot('flame-time');
      await page.click('#flame-tokens');
      await ready();
      assert.equal(await page.getAttribute('#flame', 'data-mode'), 'tokens');
      const boxes = await page.$$eval('#flame .flame-box', bs => bs.map(b => [b.dataset.span, parseFloat(b.style.width)]));
      const tok = s => s.attributes['gen_ai.usage.input_tokens'] + s.attributes['gen_ai.usage.output_tokens'];
      const chats = tr.spans.filter(s => s.name.startsWith('chat'));
      const total = chats.reduce((a, s) => a + tok(s), 0);
      for (const s of chats) {
        const w = boxes.find(b => b[0] === s.span_id)[1];
        assert.ok(Math.abs(w - 100 * tok(s) / total) < 0.01, s.name + ': ' + w);
      }
      await shot('flame-tokens');
    });

    await step('diff: two runs of one key, step by step', async () => {
      await go('#/?key=C0');
      const rows = await page.$$eval('#runs tbody tr', rs => rs.map(r => r.dataset.trace));
      const runs = await api(url, {key: 'C0'});
      const a = runs.find(r => r.event_id === 'e20'), b = runs.find(r => r.event_id === 'e10');
      assert.ok(a && b && a.tool_calls === 1 && b.tool_calls === 0, 'C0: e20 calls the tool, e10 not');
      await page.check('#runs tbody tr:nth-child(' + (rows.indexOf(a.trace_id) + 1) + ') input.pick');
      assert.ok(await page.isDisabled('#diff-picked'));
      await page.check('#runs tbody tr:nth-child(' + (rows.indexOf(b.trace_id) + 1) + ') input.pick');
      await page.click('#diff-picked');
      await ready();
      const prompts = await page.$$eval('#diff tr.field-prompt td', ts => ts.map(t => [t.className, t.textContent]));
      assert.ok(prompts.some(([c, t]) => c === 'changed' && t.includes('Where is A1042?')), JSON.stringify(prompts));
      assert.ok(prompts.some(([c, t]) => c === 'changed' && t.includes('hello')), JSON.stringify(prompts));
      assert.ok((await texts('#diff td.name')).some(t => t.includes('execute_tool lookup_order') && t.includes('only in the first run')));
      assert.ok((await page.$$('#diff tr.field-arguments')).length >= 1);
      assert.ok((await page.$$('#diff tr.field-latency')).length >= 2);
      assert.match(await page.textContent('#diff-summary'), /^[1-9]\d* fields differ/);
      await shot('diff');
      // from a run: the other runs of its key, each a diff link
      await go('#/trace/' + a.trace_id);
      await page.click('#diff-link');
      await page.waitForSelector('#diff-choices a');
      assert.equal((await page.$$('#diff-choices a')).length, runs.length - 1);
    });

    await step('key view: a key\'s memory document, history and runs', async () => {
      const runs = await api(url, {key: 'C0'});
      const withTool = runs.find(r => r.tool_calls > 0);
      await go('#/trace/' + withTool.trace_id);
      await page.click('#key-link');
      await ready();
      assert.equal(await page.textContent('#key-name'), 'C0');
      const mem = JSON.parse(await page.textContent('#key-memory'));
      assert.ok(mem.last_order && mem.lookups >= 1, JSON.stringify(mem));
      const k = await (await fetch(url + 'api/key?key=C0')).json();
      assert.deepEqual(mem, k.memory);
      const kept = await page.$$('#key-history .history-run');
      assert.equal(kept.length, k.history.length);
      assert.ok(kept.length >= 1);
      assert.ok((await texts('#key-history .msg .text')).some(t => TEXTS.some(x => t.includes(x))));
      const rows = await page.$$eval('#key-runs tbody tr', rs => rs.map(r => r.dataset.trace));
      assert.deepEqual(rows, runs.map(r => r.trace_id));
      await shot('key');
    });

    await step('live tail: a run started after the page opened shows at the top', async () => {
      await go('#/');
      await page.waitForFunction(() => document.getElementById('tail-state').textContent === 'live tail: on');
      assert.ok(await page.isHidden('#live'));
      send([{id: 'late-1', customer_id: 'C9', text: 'hello from later'}]);
      await page.waitForSelector('#live tbody tr', {timeout: 15000});
      assert.deepEqual(await page.$$eval('#live tbody tr td:nth-child(5)', ts => ts.map(t => t.textContent)), ['late-1']);
      await shot('live-tail');
    });

    await step('hostile text in a prompt and a key is shown as text', async () => {
      await go('#/?search=alert');
      const keys = await texts('#runs tbody td.key');
      assert.deepEqual(keys, [XSS_KEY]);
      await page.click('#runs tbody tr:first-child a.open');
      await ready();
      const users = await texts('.msg.user .text');
      assert.ok(users.includes('please ' + XSS), JSON.stringify(users));
      assert.ok((await texts('.msg.system .text')).includes('You help ' + XSS_KEY + '.'));
      assert.ok(await page.isVisible('.msg.user .text'));
      assert.equal((await page.$$('main img')).length, 0);
      assert.equal((await page.$$('script')).length, 1);
      await sleep(300);
      await shot('hostile');
    });

    await step('overview: totals and charts', async () => {
      await go('#/overview');
      const all = await api(url, {});
      assert.match(await page.textContent('#overview-totals'), new RegExp('^runs' + all.length + 'errors'));
      assert.equal((await page.$$('.chart')).length, 5);
      await shot('overview');
    });

    assert.deepEqual(dialogs, [], 'no dialog may open');
    assert.deepEqual(badRequests, [], 'no request to x');
    assert.deepEqual(problems, [], 'no page errors, no CSP violations');
    eddy.stdin.end();
    const rc = await new Promise(r => eddy.on('exit', r));
    assert.equal(rc, 0, stderr);
    console.log('dashboard_test: ' + passed.length + ' passed; screenshots in ' + path.relative(ROOT, OUT));
  } finally {
    if (browser) await browser.close();
    for (const p of procs) if (p.exitCode === null) p.kill('SIGTERM');
    fs.rmSync(tmp, {recursive: true, force: true});
  }
}

main().catch(e => { console.error('FAIL ' + (e && e.stack ? e.stack : e)); process.exit(1); });
