'use strict';
// Drives Debian's chromium, headless, against edged's line page and checks what a
// technician at the line sees. cmd/edged/linepage_test.go starts edged and runs this.
//
//   node linepage.js --url=http://127.0.0.1:PORT/ --screenshot=FILE --scenario=restart|banner
//                    [--inspection=el] [--source=cam] [--model=el-defect] [--version=V]
//                    [--push=V2] [--timeout-ms=75000]
//
// Control channel: lines on stdout ask the Go side to act on the line, which it does
// before it reads the next one:
//   push           push version --push of the model to edged (restart scenario, when given)
//   restart        stop edged (SIGTERM); start it again once "down" follows
//   down           the page has shown the event stream is down
//   stop-broker    stop the MQTT broker
//   start-broker   start it again
//   summary {...}  the last line, the checks' figures as JSON
// Progress goes to stderr. Exit 0 when every check passed, 1 with the reason otherwise.

const { chromium } = require('playwright-core');

const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--no-sandbox', '--headless', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync',
];
const VIEWPORT = { width: 1366, height: 768 };
const MAX_RESULTS = 50;
const RESTART_SEQ = 120;

function parseArgs(argv) {
  const o = {
    scenario: 'restart', inspection: 'el', source: 'cam', model: 'el-defect', version: '', push: '',
    'timeout-ms': '75000',
  };
  for (const a of argv) {
    const m = /^--([a-z-]+)=(.*)$/s.exec(a);
    if (!m) throw new Error(`argument ${JSON.stringify(a)}: want --name=value`);
    o[m[1]] = m[2];
  }
  for (const k of ['url', 'screenshot']) {
    if (!o[k]) throw new Error(`--${k} is required`);
  }
  if (!['restart', 'banner'].includes(o.scenario)) {
    throw new Error(`--scenario=${o.scenario}: want restart or banner`);
  }
  o.timeoutMs = Number(o['timeout-ms']);
  if (!(o.timeoutMs > 0)) throw new Error(`--timeout-ms=${o['timeout-ms']}: want a positive number`);
  return o;
}

const t0 = Date.now();
function log(msg) {
  process.stderr.write(`linepage.js +${Date.now() - t0}ms ${msg}\n`);
}
function tell(line) {
  process.stdout.write(line + '\n');
}

// step waits for fn(arg) in the page to return a truthy value, naming what it waited
// for and what the page showed when it gives up.
async function step(page, what, fn, arg, timeout, state) {
  const started = Date.now();
  log(`waiting: ${what}`);
  try {
    const h = await page.waitForFunction(fn, arg, { timeout, polling: 100 });
    const v = await h.jsonValue();
    await h.dispose();
    log(`ok after ${Date.now() - started}ms: ${what}`);
    return v;
  } catch (e) {
    let seen = '';
    try { seen = JSON.stringify(await page.evaluate(state)); } catch (e2) { seen = `(page unreadable: ${e2.message})`; }
    throw new Error(`${what}: not within ${timeout}ms (${e.message.split('\n')[0]}); page shows ${seen}`);
  }
}

// pageState is what a failed wait reports about the page.
function pageState() {
  const q = (s) => document.querySelector(s);
  const first = q('#verdicts li.result');
  const banner = q('#banner');
  return {
    conn: q('#conn') && q('#conn').getAttribute('data-state'),
    results: document.querySelectorAll('#verdicts li.result').length,
    newest_seq: first && first.getAttribute('data-seq'),
    ng_figures: document.querySelectorAll('#ng-images figure.ng').length,
    ng_loaded: [...document.querySelectorAll('#ng-images figure.ng img')].filter((i) => i.complete && i.naturalWidth > 0).length,
    banner: banner && { hidden: banner.hidden, kind: banner.getAttribute('data-kind'), text: banner.textContent.trim().slice(0, 200) },
    counters: [...document.querySelectorAll('#counters tr[data-inspection]')].map((r) => r.textContent.replace(/\s+/g, ' ').trim()),
    models: [...document.querySelectorAll('#models li[data-model]')].map((r) => r.textContent.replace(/\s+/g, ' ').trim().slice(0, 200)),
    sources: [...document.querySelectorAll('#sources li[data-source]')].map((r) => `${r.getAttribute('data-source')} up=${r.getAttribute('data-up')}`),
  };
}

// holdEvents runs in the page before its own scripts. It lets a screenshot be taken
// of a still page: at 10 NG images a second one always arrives while chromium
// captures, and shows black until its image has loaded. While window.__holdEvents is
// set, the stream's named events wait, in order, for __releaseEvents; open and error
// (the connection's state) are never held.
function holdEvents() {
  const held = [];
  window.__holdEvents = false;
  window.__releaseEvents = () => {
    window.__holdEvents = false;
    for (const f of held.splice(0)) f();
  };
  const add = EventSource.prototype.addEventListener;
  EventSource.prototype.addEventListener = function (type, fn, opts) {
    if (type === 'open' || type === 'error' || typeof fn !== 'function') return add.call(this, type, fn, opts);
    return add.call(this, type, function (ev) {
      if (window.__holdEvents) held.push(() => fn.call(this, ev));
      else fn.call(this, ev);
    }, opts);
  };
}

// screenshot captures the viewport once the stream is held and every NG image on the
// page has loaded (or failed: a kept image rotates out on the box), then lets the
// stream go on.
async function screenshot(page, path, budget) {
  await page.evaluate(() => { window.__holdEvents = true; });
  try {
    const imgs = await step(page, 'every NG image on the page settled',
      () => {
        const all = [...document.querySelectorAll('#ng-images figure.ng img')];
        if (!all.every((i) => i.complete)) return null;
        return { shown: all.length, loaded: all.filter((i) => i.naturalWidth > 0).length };
      }, null, budget(10000), pageState);
    await page.screenshot({ path, fullPage: false });
    log(`screenshot ${path}`);
    return imgs;
  } finally {
    await page.evaluate(() => window.__releaseEvents());
  }
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const origin = new URL(o.url).origin;
  const budget = (ms) => Math.max(1000, Math.min(ms, o.timeoutMs - (Date.now() - t0)));
  const summary = { scenario: o.scenario, chromium: '', viewport: VIEWPORT };

  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true, timeout: 30000 });
  summary.chromium = browser.version();
  try {
    const page = await browser.newPage({ viewport: VIEWPORT });
    await page.addInitScript(holdEvents);
    // The page must work offline: anything it asks of another origin is refused and
    // fails the run, as is any request but a read (the page is read-only).
    const foreign = [];
    const writes = [];
    await page.route('**/*', (route) => {
      const req = route.request();
      if (new URL(req.url()).origin !== origin) {
        foreign.push(req.url());
        return route.abort('blockedbyclient');
      }
      if (!['GET', 'HEAD'].includes(req.method())) writes.push(`${req.method()} ${req.url()}`);
      return route.continue();
    });
    const pageErrors = [];
    page.on('pageerror', (e) => pageErrors.push(e.message));
    let consoleErrors = 0;
    page.on('console', (m) => { if (m.type() === 'error') consoleErrors++; });

    const resp = await page.goto(o.url, { waitUntil: 'load', timeout: budget(15000) });
    if (!resp || resp.status() !== 200) throw new Error(`GET ${o.url}: status ${resp && resp.status()}`);
    summary.title = await page.title();

    const live = () => {
      const c = document.querySelector('#conn');
      return c && c.getAttribute('data-state') === 'live';
    };
    const down = () => {
      const c = document.querySelector('#conn');
      return c && c.getAttribute('data-state') === 'down';
    };
    await step(page, '#conn[data-state=live]', live, null, budget(15000), pageState);
    summary.conn_live_text = (await page.textContent('#conn')).trim();

    if (o.scenario === 'restart') {
      await restartScenario(page, o, budget, summary, down, live);
    } else {
      await bannerScenario(page, o, budget, summary);
    }

    if (foreign.length) throw new Error(`the page asked other origins (it must work offline): ${foreign.join(', ')}`);
    if (writes.length) throw new Error(`the page made requests that are not reads (it must be read-only): ${writes.join(', ')}`);
    if (pageErrors.length) throw new Error(`uncaught errors in the page: ${pageErrors.join(' | ')}`);
    summary.console_errors = consoleErrors;
    summary.elapsed_ms = Date.now() - t0;
    tell('summary ' + JSON.stringify(summary));
  } finally {
    await browser.close();
  }
}

async function restartScenario(page, o, budget, summary, down, live) {
  await step(page, 'at least 5 li.result in #verdicts',
    () => document.querySelectorAll('#verdicts li.result').length >= 5, null, budget(20000), pageState);
  const img = await step(page, 'a loaded image in #ng-images figure.ng',
    () => {
      const i = [...document.querySelectorAll('#ng-images figure.ng img')].find((x) => x.complete && x.naturalWidth > 0);
      return i && { src: i.getAttribute('src'), w: i.naturalWidth, h: i.naturalHeight, caption: (i.closest('figure').querySelector('figcaption') || { textContent: '' }).textContent.trim() };
    }, null, budget(20000), pageState);
  if (!/^\/v1\/line\/images\/[^/]+$/.test(new URL(img.src, o.url).pathname)) {
    throw new Error(`NG image src ${img.src}: want /v1/line/images/{id}`);
  }
  if (!img.caption) throw new Error('NG image figcaption is empty: want label, score and time');
  summary.ng_image = img;

  const results = await page.$$eval('#verdicts li.result', (els) => els.map((e) => ({
    verdict: e.getAttribute('data-verdict'), seq: Number(e.getAttribute('data-seq')),
    inspection: e.getAttribute('data-inspection'), text: e.textContent.replace(/\s+/g, ' ').trim(),
  })));
  if (results.length > MAX_RESULTS) throw new Error(`#verdicts holds ${results.length} li.result, want at most ${MAX_RESULTS}`);
  for (const r of results) {
    if (!['OK', 'NG', 'UNKNOWN'].includes(r.verdict)) throw new Error(`li.result data-verdict ${JSON.stringify(r.verdict)}: want OK, NG or UNKNOWN`);
    if (!(Number.isInteger(r.seq) && r.seq >= 1)) throw new Error(`li.result data-seq ${r.seq}: want a sequence number`);
    if (r.inspection !== o.inspection) throw new Error(`li.result data-inspection ${JSON.stringify(r.inspection)}: want ${o.inspection}`);
    if (!r.text.includes(r.verdict)) throw new Error(`li.result ${JSON.stringify(r.text)} does not show its verdict ${r.verdict}`);
  }
  for (let i = 1; i < results.length; i++) {
    if (results[i].seq >= results[i - 1].seq) {
      throw new Error(`#verdicts is not newest first: seq ${results[i - 1].seq} before ${results[i].seq}`);
    }
  }
  if (o.version && !results.some((r) => r.text.includes(o.version))) {
    throw new Error(`no li.result shows the model version ${o.version}: ${results[0].text}`);
  }
  summary.results_before = results.length;

  const counters = await step(page, `#counters row for ${o.inspection} with counts above 0`,
    (name) => {
      const row = [...document.querySelectorAll('#counters tr[data-inspection]')].find((r) => r.getAttribute('data-inspection') === name);
      if (!row) return null;
      const n = (sel) => { const c = row.querySelector(sel); return c ? Number(c.textContent.replace(/[^0-9]/g, '')) : NaN; };
      const c = { ok: n('td.ok'), ng: n('td.ng'), unknown: n('td.unknown'), ng_share: (row.querySelector('td.ng-share') || { textContent: '' }).textContent.trim() };
      return c.ok + c.ng + c.unknown > 0 && c.ng > 0 && c.ng_share !== '' ? c : null;
    }, o.inspection, budget(10000), pageState);
  summary.counters = counters;

  const model = await step(page, `#models shows ${o.model} ${o.version || '(any version)'}`,
    ([name, version]) => {
      const li = [...document.querySelectorAll('#models li[data-model]')].find((r) => r.getAttribute('data-model') === name);
      const v = li && li.querySelector('span.version');
      const text = v ? v.textContent.trim() : '';
      return text && (!version || text.includes(version)) ? { version: text, swaps: li.querySelectorAll('ul.swaps li').length } : null;
    }, [o.model, o.version], budget(10000), pageState);
  summary.model = model;

  await step(page, `#sources shows ${o.source} up`,
    (name) => [...document.querySelectorAll('#sources li[data-source]')].some((r) => r.getAttribute('data-source') === name && r.getAttribute('data-up') === 'true'),
    o.source, budget(10000), pageState);
  await step(page, '#banner hidden (broker connected, breakers closed)',
    () => { const b = document.querySelector('#banner'); return b && b.hidden; }, null, budget(10000), pageState);

  if (o.push) {
    // A model pushed while the page watches: the active version changes, the swap shows
    // in the history, and the verdicts after it name the new version.
    tell('push');
    summary.swap = await step(page, `#models shows ${o.model} ${o.push} and the swap from ${o.version} in its history`,
      ([name, version, from]) => {
        const li = [...document.querySelectorAll('#models li[data-model]')].find((r) => r.getAttribute('data-model') === name);
        const v = li && li.querySelector('span.version');
        if (!v || !v.textContent.includes(version)) return null;
        const swaps = [...li.querySelectorAll('ul.swaps li')].map((e) => e.textContent.replace(/\s+/g, ' ').trim());
        return swaps.some((e) => e.includes(from) && e.includes(version)) ? { version: v.textContent.trim(), swaps } : null;
      }, [o.model, o.push, o.version], budget(20000), pageState);
    await step(page, `an li.result judged by ${o.model} ${o.push}`,
      (v) => [...document.querySelectorAll('#verdicts li.result')].some((e) => e.textContent.includes(v)),
      o.push, budget(20000), pageState);
  }

  // A panel PC has no room to scroll sideways.
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  if (width > VIEWPORT.width) throw new Error(`the page is ${width}px wide at a ${VIEWPORT.width}px viewport: it scrolls sideways`);
  summary.scroll_width = width;

  summary.screenshot_images = await screenshot(page, o.screenshot, budget);
  summary.screenshot = o.screenshot;

  // The restarted edged's simulator numbers its frames from 1 again. Its HTTP server
  // is up before its pipeline runs and the page reconnects within a second or two, so
  // the first results it shows are far below RESTART_SEQ (at 20 frames/s), while the
  // old run's are all above: a seq below is proof of the new run.
  const maxSeqBefore = await step(page, `the newest li.result at seq ${RESTART_SEQ} or more`,
    (min) => {
      const f = document.querySelector('#verdicts li.result');
      const s = f ? Number(f.getAttribute('data-seq')) : 0;
      return s >= min ? s : 0;
    }, RESTART_SEQ, budget(20000), pageState);
  summary.max_seq_before = maxSeqBefore;
  const stopAt = Date.now();
  tell('restart');
  await step(page, '#conn[data-state=down] while edged is stopped', down, null, budget(20000), pageState);
  summary.conn_down_text = (await page.textContent('#conn')).trim();
  summary.down_after_ms = Date.now() - stopAt;
  const downAt = Date.now();
  tell('down');
  await step(page, '#conn[data-state=live] again after edged restarted', live, null, budget(60000), pageState);
  // From the page showing the stream down to live again: edged's start-up included.
  summary.live_again_after_ms = Date.now() - downAt;
  // The simulator starts its sequence again, so the newest result shows a lower seq
  // than before, and then the stream goes on.
  const firstAfter = await step(page, `a li.result from the restarted edged (seq below ${maxSeqBefore})`,
    (max) => {
      const f = document.querySelector('#verdicts li.result');
      const s = f ? Number(f.getAttribute('data-seq')) : 0;
      return s > 0 && s < max ? s : 0;
    }, maxSeqBefore, budget(30000), pageState);
  await step(page, `more li.result after seq ${firstAfter}`,
    (after) => {
      const f = document.querySelector('#verdicts li.result');
      return f && Number(f.getAttribute('data-seq')) > after;
    }, firstAfter, budget(15000), pageState);
  summary.first_seq_after = firstAfter;
  summary.results_after = await page.$$eval('#verdicts li.result', (els) => els.length);
}

async function bannerScenario(page, o, budget, summary) {
  await step(page, '#banner hidden while the broker is up',
    () => { const b = document.querySelector('#banner'); return b && b.hidden; }, null, budget(15000), pageState);
  tell('stop-broker');
  const shown = await step(page, '#banner visible (broker or breaker) while the broker is down',
    () => {
      const b = document.querySelector('#banner');
      if (!b || b.hidden || b.getClientRects().length === 0) return null;
      const kind = b.getAttribute('data-kind');
      const text = b.textContent.replace(/\s+/g, ' ').trim();
      return (kind === 'broker' || kind === 'breaker') && text ? { kind, text } : null;
    }, null, budget(30000), pageState);
  summary.banner = shown;
  summary.screenshot_images = await screenshot(page, o.screenshot, budget);
  summary.screenshot = o.screenshot;
  // The stream itself stays up: the broker is not the page's connection.
  const conn = await page.getAttribute('#conn', 'data-state');
  if (conn !== 'live') throw new Error(`#conn data-state ${conn} while only the broker is down: want live`);
  tell('start-broker');
  await step(page, '#banner hidden again once the broker is back',
    () => { const b = document.querySelector('#banner'); return b && b.hidden; }, null, budget(40000), pageState);
}

const timer = setTimeout(() => {
  log('overall timeout');
  process.stderr.write('linepage.js: FAIL: did not finish within --timeout-ms\n');
  process.exit(1);
}, Number((/--timeout-ms=(\d+)/.exec(process.argv.join(' ')) || [])[1] || 75000) + 5000);
timer.unref();

main().then(() => process.exit(0), (e) => {
  process.stderr.write(`linepage.js: FAIL: ${e && e.message ? e.message : e}\n`);
  process.exit(1);
});
