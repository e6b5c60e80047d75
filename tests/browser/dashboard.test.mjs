// Browser test of the dashboard served by the real binary, in Debian's Chromium through
// playwright-core. Run by scripts/test-browser.sh, which sets CITYSTREAM_BIN:
//   CITYSTREAM_BIN=$PWD/target/debug/citystream node --test tests/browser/
// Nothing here is skipped: a missing binary or browser fails the suite.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const BIN = process.env.CITYSTREAM_BIN;
if (!BIN || !fs.existsSync(BIN)) {
  throw new Error(`CITYSTREAM_BIN must name the citystream binary (got ${JSON.stringify(BIN)})`);
}
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const SHOTS = path.join(REPO, 'target', 'browser-screenshots');
const PANELS = ['panel-rate', 'panel-windows', 'panel-history', 'panel-alerts', 'panel-late', 'panel-dead', 'panel-health'];
const TYPES = ['traffic', 'weather', 'incident', 'construction'];
// Console messages the browser itself logs for requests that fail while the server is down.
const NETWORK_NOISE = /Failed to load resource|net::ERR_|ERR_CONNECTION_REFUSED|ERR_EMPTY_RESPONSE|ERR_INCOMPLETE_CHUNKED_ENCODING/;

const children = new Set();
const tempDirs = [];
let browser;

// ---------- processes ----------

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function tempDir(prefix) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  tempDirs.push(dir);
  return dir;
}

// Starts the binary; its output goes to a log file shown when a test fails.
function startBin(args, logFile) {
  const log = fs.openSync(logFile, 'a');
  const child = spawn(BIN, args, { stdio: ['ignore', log, log], env: { ...process.env, NO_COLOR: '1' } });
  fs.closeSync(log);
  child.logFile = logFile;
  child.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  child.once('error', () => {});
  children.add(child);
  child.exited.then(() => children.delete(child));
  return child;
}

async function killHard(child) {
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await child.exited;
}

function logTail(child, bytes = 4000) {
  try {
    const text = fs.readFileSync(child.logFile, 'utf8');
    return text.slice(-bytes);
  } catch {
    return '(no log)';
  }
}

async function waitForHealthy(base, child, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`citystream exited before answering:\n${logTail(child)}`);
    }
    try {
      const res = await fetch(`${base}/api/v1/health`, { signal: AbortSignal.timeout(1000) });
      if (res.status === 200) return;
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  throw new Error(`no 200 from ${base}/api/v1/health within ${timeoutMs} ms:\n${logTail(child)}`);
}

async function runToEnd(args, logFile, timeoutMs) {
  const child = startBin(args, logFile);
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const { code, signal } = await child.exited;
  clearTimeout(timer);
  if (code !== 0) throw new Error(`citystream ${args[0]} ended with ${code ?? signal}:\n${logTail(child)}`);
}

// ---------- helpers ----------

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function getJson(url) {
  const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
  assert.equal(res.status, 200, `${url} answered ${res.status}`);
  return res.json();
}

// Polls the API until an alert shows up whose id is not in `known`.
async function nextNewAlert(base, known, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const { alerts } = await getJson(`${base}/api/v1/alerts?limit=1`);
    if (alerts.length && !known.has(alerts[0].event_id)) return alerts[0];
    await sleep(50);
  }
  throw new Error(`no new alert stored within ${timeoutMs} ms`);
}

async function alertIdsNow(base, page) {
  const { alerts } = await getJson(`${base}/api/v1/alerts?limit=1000`);
  const inPage = await page.$$eval('[data-event-id]', (els) => els.map((e) => e.dataset.eventId));
  return new Set([...alerts.map((a) => a.event_id), ...inPage]);
}

// A page that records every console error or warning and every uncaught error, with the
// phase of the test it happened in (network noise is allowed only while the server is down).
async function openPage(base, viewport) {
  const page = await browser.newPage({ viewport });
  page.problems = [];
  page.phase = 'normal';
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') page.problems.push({ phase: page.phase, text: `${m.type()}: ${m.text()}` });
  });
  page.on('pageerror', (e) => page.problems.push({ phase: 'any', text: `pageerror: ${e.message}` }));
  const res = await page.goto(`${base}/`);
  assert.equal(res.status(), 200, 'GET / answers 200');
  assert.match(res.headers()['content-security-policy'] ?? '', /default-src 'self'/, 'GET / carries the CSP');
  return page;
}

function assertNoProblems(page) {
  const bad = page.problems.filter((p) => !(p.phase === 'outage' && NETWORK_NOISE.test(p.text)));
  assert.deepEqual(bad, [], 'no console errors, warnings or page errors');
}

async function chartCities(page) {
  return JSON.parse((await page.getAttribute('#rate-chart', 'data-cities')) ?? '[]');
}

async function waitForDashboardData(page) {
  // The chart draws at least one city with non-zero points.
  await page.waitForFunction(() => {
    const box = document.getElementById('rate-chart');
    return JSON.parse(box.dataset.cities ?? '[]').length > 0 && Number(box.dataset.points) > 0
      && box.querySelector('canvas') !== null;
  }, null, { timeout: 15000 });
  // The window grid has numbers in its cells, not all zero.
  await page.waitForFunction(() => [...document.querySelectorAll('#window-grid td.num')]
    .some((td) => /^[1-9][\d,.\s]*$/.test(td.textContent.trim())), null, { timeout: 15000 });
  // Totals from /stats are shown.
  for (const id of ['stat-total', 'stat-high', 'stat-critical', 'late-total', 'dead-total']) {
    await page.waitForFunction((i) => /\d/.test(document.getElementById(i).textContent), id, { timeout: 15000 });
  }
  await page.waitForFunction(() => document.getElementById('health-status').textContent.trim() === 'UP', null, { timeout: 15000 });
}

// The history view has drawn its four charts (at `resolution`, when given).
async function waitForHistory(page, resolution = null, timeout = 15000) {
  await page.waitForFunction(([types, res]) => {
    const panel = document.getElementById('panel-history');
    return panel.dataset.state === 'ready' && (!res || panel.dataset.resolution === res)
      && types.every((t) => {
        const box = document.getElementById(`history-${t}`);
        return box.querySelector('canvas') !== null && (!res || box.dataset.resolution === res);
      });
  }, [TYPES, resolution], { timeout });
}

// ---------- fixtures ----------

before(async () => {
  assert.ok(fs.existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}`);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  fs.mkdirSync(SHOTS, { recursive: true });
});

after(async () => {
  await Promise.all([...children].map(killHard));
  await browser?.close();
  for (const dir of tempDirs) fs.rmSync(dir, { recursive: true, force: true });
});

// An hour of events up to now (5 a second, with some out of order, late and hostile), stored by
// `process` from a file into `dataDir`.
async function backfillLastHour(dir, dataDir) {
  const start = new Date(Date.now() - 60 * 60 * 1000).toISOString();
  const events = execFileSync(BIN, ['produce', '--count', '18000', '--rate', '5', '--burst', '--seed', '7',
    '--out-of-order', '0.02', '--late', '0.01', '--hostile', '0.02', '--start-time', start],
  { maxBuffer: 64 << 20, stdio: ['ignore', 'pipe', 'ignore'] });
  const file = path.join(dir, 'last-hour.jsonl');
  fs.writeFileSync(file, events);
  await runToEnd(['process', '--input', file, '--data-dir', dataDir], path.join(dir, 'process.log'), 60000);
}

// ---------- the tests ----------

test('live dashboard over `up`: data, live alerts, outage banner and recovery', async (t) => {
  const dir = tempDir('citystream-browser-up-');
  const dataDir = path.join(dir, 'data');
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  // The hour before: backfilled from a file by `process`, so the charts have a history.
  await backfillLastHour(dir, dataDir);
  const args = ['up', '--rate', '20', '--out-of-order', '0.02', '--late', '0.01', '--hostile', '0.02',
    '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir];
  const log = path.join(dir, 'up.log');
  let up = startBin(args, log);
  let page;
  try {
    await waitForHealthy(base, up);
    page = await openPage(base, { width: 1280, height: 900 });
    await waitForDashboardData(page);
    // The stream's stats tick carries the processing rate.
    await page.waitForFunction(() => /\d/.test(document.getElementById('stat-rate').textContent), null, { timeout: 10000 });

    // Cities that appear after the page loaded join the chart, up to the top N.
    const topN = Number(await page.textContent('#top-n'));
    const { cities } = await getJson(`${base}/api/v1/cities?limit=1000`);
    await page.waitForFunction((n) => JSON.parse(document.getElementById('rate-chart').dataset.cities).length >= n,
      Math.min(topN, cities.length), { timeout: 10000 });

    // An alert stored after the page opened reaches the feed within 2 s.
    let known = await alertIdsNow(base, page);
    let fresh = await nextNewAlert(base, known);
    let t0 = Date.now();
    await page.waitForSelector(`#alert-feed [data-event-id="${fresh.event_id}"]`, { timeout: 2000 });
    t.diagnostic(`a new alert reached the feed ${Date.now() - t0} ms after the API listed it`);
    // The history of the busiest city is drawn too (by default, the last 24 h) before the
    // screenshot the README shows.
    await waitForHistory(page);
    await page.screenshot({ path: path.join(SHOTS, 'dashboard.png'), fullPage: true });

    // The server dies: the banner shows within 5 s.
    page.phase = 'outage';
    await killHard(up);
    t0 = Date.now();
    await page.locator('#banner').waitFor({ state: 'visible', timeout: 5000 });
    t.diagnostic(`banner shown ${Date.now() - t0} ms after the kill`);
    assert.match(await page.textContent('#banner'), /reach|DOWN|DEGRADED/i);

    // It comes back on the same port and data: the banner goes within 10 s, the feed works.
    up = startBin(args, log);
    t0 = Date.now();
    await waitForHealthy(base, up);
    await page.locator('#banner').waitFor({ state: 'hidden', timeout: 10000 });
    t.diagnostic(`banner gone ${Date.now() - t0} ms after the restart`);
    await sleep(500); // console messages of the outage arrive asynchronously
    page.phase = 'normal';
    known = await alertIdsNow(base, page);
    fresh = await nextNewAlert(base, known);
    t0 = Date.now();
    await page.waitForSelector(`#alert-feed [data-event-id="${fresh.event_id}"]`, { timeout: 2000 });
    t.diagnostic(`after the restart, a new alert reached the feed in ${Date.now() - t0} ms`);
    // Snapshots and the stream overlap: each alert is shown once, and the feed stays bounded.
    const ids = await page.$$eval('#alert-feed [data-event-id]', (els) => els.map((e) => e.dataset.eventId));
    assert.equal(new Set(ids).size, ids.length, 'no alert twice in the feed');
    assert.ok(ids.length <= 200, `at most 200 alerts in the feed, got ${ids.length}`);

    const noise = page.problems.filter((p) => p.phase === 'outage').length;
    t.diagnostic(`${noise} console messages of failed requests during the outage (allowed)`);

    assertNoProblems(page);
    await page.close();
  } catch (err) {
    console.error(`--- citystream up log (tail) ---\n${logTail(up)}`);
    console.error('--- browser console problems ---', page?.problems);
    throw err;
  } finally {
    await killHard(up);
  }
});

// 3000 events over 300 cities in the last 30 minutes, in time order; a few cities are busy.
function writeManyCities(file) {
  const types = ['traffic', 'weather', 'incident', 'construction'];
  const severities = ['low', 'medium', 'high', 'critical'];
  const busy = { 'City 007': 500, 'City 123': 300, 'City 250': 200, 'City 042': 150 };
  const quiet = 'City 299';
  const cities = [];
  for (const [city, n] of Object.entries(busy)) for (let i = 0; i < n; i++) cities.push(city);
  cities.push(quiet, quiet); // two events only
  for (let i = 0; cities.length < 3000; i++) {
    const city = `City ${String((i % 300) + 1).padStart(3, '0')}`;
    if (!(city in busy) && city !== quiet) cities.push(city);
  }
  const now = Date.now();
  const events = cities.map((city, i) => {
    const severity = city === quiet ? 'critical' : severities[i % 4];
    const type = types[(i * 7) % 4];
    return {
      event_id: randomUUID(),
      city,
      event_type: type,
      severity,
      timestamp: new Date(now - 10000 - Math.floor(Math.random() * 29 * 60 * 1000)).toISOString(),
      description: `${severity} ${type} in ${city}`,
    };
  });
  events.sort((a, b) => a.timestamp.localeCompare(b.timestamp));
  fs.writeFileSync(file, events.map((e) => JSON.stringify(e)).join('\n') + '\n');
  return { busiest: 'City 007', quiet };
}

test('300 cities: top N in the chart, search adds any city, phone layout', async () => {
  const dir = tempDir('citystream-browser-many-');
  const dataDir = path.join(dir, 'data');
  const input = path.join(dir, 'events.jsonl');
  const { busiest, quiet } = writeManyCities(input);
  await runToEnd(['process', '--input', input, '--data-dir', dataDir], path.join(dir, 'process.log'), 60000);
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const serve = startBin(['serve', '--data-dir', dataDir, '--listen', `127.0.0.1:${port}`], path.join(dir, 'serve.log'));
  let page;
  let phone;
  try {
    await waitForHealthy(base, serve);
    const { cities } = await getJson(`${base}/api/v1/cities?limit=1000`);
    assert.equal(cities.length, 300, 'the store holds 300 cities');

    page = await openPage(base, { width: 1280, height: 900 });
    await waitForDashboardData(page);
    const topN = Number(await page.textContent('#top-n'));
    const shown = await chartCities(page);
    assert.ok(shown.length <= topN, `at most ${topN} series, got ${shown.length}`);
    assert.ok(shown.includes(busiest), `the busiest city is drawn: ${shown}`);
    assert.ok(!shown.includes(quiet));
    assert.equal(await page.locator(`#city-list option[value="${quiet}"]`).count(), 1, 'the search suggests every city');

    // Pick a quiet city by name: it joins the chart and grid, and filters the alerts.
    await page.fill('#city-search', quiet);
    await page.press('#city-search', 'Enter');
    await page.waitForFunction((c) => JSON.parse(document.getElementById('rate-chart').dataset.cities).includes(c), quiet, { timeout: 5000 });
    await page.locator(`#window-grid tr[data-city="${quiet}"]`).first().waitFor({ timeout: 5000 });
    await page.waitForFunction((c) => {
      const items = [...document.querySelectorAll('#alert-feed [data-event-id] .city')];
      return items.length > 0 && items.every((e) => e.textContent === c);
    }, quiet, { timeout: 5000 });
    assert.equal(await page.inputValue('#alert-city'), quiet);
    assertNoProblems(page);
    await page.close();

    // Phone: one column, no sideways scrolling, every panel reachable.
    phone = await openPage(base, { width: 390, height: 844 });
    await waitForDashboardData(phone);
    await phone.fill('#city-search', quiet);
    await phone.press('#city-search', 'Enter');
    await phone.locator(`#window-grid tr[data-city="${quiet}"]`).first().waitFor({ timeout: 5000 });
    for (const id of PANELS) {
      const panel = phone.locator(`#${id}`);
      await panel.scrollIntoViewIfNeeded();
      assert.ok(await panel.isVisible(), `#${id} is visible`);
      const box = await panel.boundingBox();
      assert.ok(box && box.x >= 0 && box.x + box.width <= 390 && box.y < 844 && box.y + box.height > 0, `#${id} is on screen: ${JSON.stringify(box)}`);
    }
    const scrollWidth = await phone.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(scrollWidth <= 390, `no horizontal scroll at 390 px (scrollWidth ${scrollWidth})`);
    const chartWidth = await phone.evaluate(() => document.querySelector('#rate-chart canvas').getBoundingClientRect().width);
    assert.ok(chartWidth <= 390, `the chart fits the phone (${chartWidth} px)`);
    await waitForHistory(phone);
    const historyWidths = await phone.$$eval('#history-charts canvas', (els) => els.map((e) => e.getBoundingClientRect().width));
    assert.equal(historyWidths.length, 4, 'four history charts');
    assert.ok(historyWidths.every((w) => w <= 390), `the history charts fit the phone (${historyWidths})`);
    const columns = await phone.$$eval('#history-charts .history-chart', (els) => new Set(els.map((e) => e.getBoundingClientRect().x)).size);
    assert.equal(columns, 1, 'the history charts are in one column');
    await phone.screenshot({ path: path.join(SHOTS, 'dashboard-phone.png'), fullPage: true });
    assertNoProblems(phone);
    await phone.close();
  } catch (err) {
    console.error(`--- citystream serve log (tail) ---\n${logTail(serve)}`);
    console.error('--- browser console problems ---', page?.problems, phone?.problems);
    throw err;
  } finally {
    await killHard(serve);
  }
});

// Events of a city over the last 3 days, one every 7 minutes, types and severities in turn, and
// a few of another city; in time order. Returns the first city's events (time, type, severity).
function writeHistory(file, now) {
  const city = 'Histown';
  const other = 'Othertown';
  const severities = ['low', 'medium', 'high', 'critical'];
  const events = [];
  const mine = [];
  const start = now - 3 * 24 * 3600 * 1000;
  for (let i = 0, t = start + 41000; t < now - 20000; i++, t += 7 * 60 * 1000) {
    const e = { type: TYPES[i % 4], severity: severities[(i * 3 + Math.floor(i / 4)) % 4], at: t };
    mine.push(e);
    events.push({ city, ...e });
    if (i % 25 === 0) events.push({ city: other, type: TYPES[(i + 1) % 4], severity: 'low', at: t + 1000 });
  }
  const lines = events.map((e) => JSON.stringify({
    event_id: randomUUID(),
    city: e.city,
    event_type: e.type,
    severity: e.severity,
    timestamp: new Date(e.at).toISOString(),
    description: `${e.severity} ${e.type} in ${e.city}`,
  }));
  fs.writeFileSync(file, lines.join('\n') + '\n');
  return { city, other, events: mine };
}

// What the page should choose, computed here from the rule (not the page's code): the finest
// resolution with at most 1 000 windows over the range whose kept data covers most of it.
function expectedResolution(resolutions, rangeMs, now) {
  return resolutions.find((r) => {
    const span = r.span_seconds * 1000;
    const kept = r.kept_from ? Date.parse(r.kept_from) : Infinity;
    return Math.ceil(rangeMs / span) <= 1000 && kept < now - rangeMs / 2;
  })?.name;
}

test('history: 1-minute windows, a city and ranges picked, charts at the resolution for each range', async (t) => {
  const dir = tempDir('citystream-browser-history-');
  const dataDir = path.join(dir, 'data');
  const input = path.join(dir, 'events.jsonl');
  const { city, other, events } = writeHistory(input, Date.now());
  // The window is configurable: a 1-minute one, given to both roles.
  await runToEnd(['process', '--input', input, '--data-dir', dataDir, '--window', '1m'], path.join(dir, 'process.log'), 60000);
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const serve = startBin(['serve', '--data-dir', dataDir, '--listen', `127.0.0.1:${port}`, '--window', '1m'],
    path.join(dir, 'serve.log'));
  let page;
  try {
    await waitForHealthy(base, serve);
    const { resolutions } = await getJson(`${base}/api/v1/resolutions`);
    assert.equal(resolutions[0].span_seconds, 60, 'the base window is --window');
    const spanOf = (name) => resolutions.find((r) => r.name === name).span_seconds * 1000;

    page = await openPage(base, { width: 1280, height: 900 });
    const asked = [];
    page.on('request', (req) => {
      const u = new URL(req.url());
      if (u.pathname === '/api/v1/aggregations' && u.searchParams.has('from')) asked.push({ at: Date.now(), params: u.searchParams });
    });

    // The configured window in the texts and the chart, once read from the server.
    await page.locator('#window-status').waitFor({ state: 'hidden', timeout: 10000 });
    assert.deepEqual(await page.$$eval('.window-label', (els) => [...new Set(els.map((e) => e.textContent))]), ['1-minute']);
    assert.equal(await page.textContent('#rate-range'), 'last hour');
    await page.waitForFunction(() => Number(document.getElementById('rate-chart').dataset.points) > 0, null, { timeout: 15000 });

    // The picker knows the cities; the busiest is shown first.
    await page.waitForFunction((c) => document.getElementById('history-city').value === c, city, { timeout: 15000 });
    assert.equal(await page.locator(`#history-city option[value="${other}"]`).count(), 1);
    assert.deepEqual(await page.$$eval('#history-range option', (els) => els.map((e) => e.textContent)),
      ['Last 6 h', 'Last 24 h', 'Last 7 d', 'Last 30 d', 'Last 1 y']);
    assert.equal(await page.getAttribute('#history-status', 'aria-live'), 'polite');

    for (const [key, rangeMs] of [['7d', 7 * 24 * 3600e3], ['6h', 6 * 3600e3], ['1y', 365 * 24 * 3600e3]]) {
      const want = expectedResolution(resolutions, rangeMs, Date.now());
      const pickedAt = Date.now();
      await page.selectOption('#history-range', key);
      await waitForHistory(page, want);
      const status = await page.textContent('#history-status');
      assert.ok(status.includes(city), `the status names the city: ${status}`);
      assert.match(status, new RegExp(`windows \\(${want}\\)`), `the status names the resolution: ${status}`);
      const span = spanOf(want);
      for (const type of TYPES) {
        const box = await page.$eval(`#history-${type}`, (e) => ({ ...e.dataset }));
        const from = Date.parse(box.from);
        const to = Date.parse(box.to);
        // Whole windows, at most 1 000, covering the range and ending with the one now filling.
        assert.equal((to - from) % span, 0);
        assert.ok(Number(box.windows) <= 1000 && (to - from) / span === Number(box.windows));
        assert.ok(to - from >= rangeMs && to > Date.now() - span, `${key}: ${box.from} .. ${box.to}`);
        // Requests of the type's own, with resolution, from, to and event_type (one per load:
        // the view also reloads every minute, which may fall in here).
        const reqs = asked.filter((r) => r.at >= pickedAt && r.params.get('event_type') === type);
        assert.ok(reqs.length >= 1, `${key}: a request for ${type}`);
        for (const { params: p } of reqs) {
          assert.equal(p.get('city'), city);
          assert.equal(p.get('resolution'), want);
          assert.ok(Number(p.get('limit')) >= 1 && Number(p.get('limit')) <= 1000);
        }
        assert.ok(reqs.some(({ params: p }) => Date.parse(p.get('from')) === from && Date.parse(p.get('to')) === to),
          `${key}: ${type} was asked for ${box.from} .. ${box.to}`);
        // The chart holds exactly the city's events of that type in those windows.
        const inRange = events.filter((e) => e.type === type && Math.floor(e.at / span) * span >= from && e.at < to);
        assert.equal(Number(box.events), inRange.length, `${key} ${type}: events`);
        assert.equal(Number(box.alerts), inRange.filter((e) => e.severity === 'high' || e.severity === 'critical').length,
          `${key} ${type}: alerts`);
        assert.ok(Number(box.events) > 0);
      }
      t.diagnostic(`${key}: ${want}, ${await page.getAttribute('#history-traffic', 'data-windows')} windows`);
    }

    // Another city: four requests for it.
    const pickedAt = Date.now();
    await page.selectOption('#history-city', other);
    await page.waitForFunction((c) => document.getElementById('history-status').textContent.includes(c)
      && document.getElementById('panel-history').dataset.state === 'ready', other, { timeout: 15000 });
    const forOther = asked.filter((r) => r.at >= pickedAt && r.params.get('city') === other);
    assert.deepEqual([...new Set(forOther.map((r) => r.params.get('event_type')))].sort(), [...TYPES].sort(),
      'one request per type, each with its event_type');

    await page.screenshot({ path: path.join(SHOTS, 'dashboard-history.png'), fullPage: true });
    assertNoProblems(page);
    await page.close();
  } catch (err) {
    console.error(`--- citystream serve log (tail) ---\n${logTail(serve)}`);
    console.error('--- browser console problems ---', page?.problems);
    throw err;
  } finally {
    await killHard(serve);
  }
});
