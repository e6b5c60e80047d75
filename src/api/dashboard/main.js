// CityStream dashboard, the entry module: REST snapshots from /api/v1, kept live by the
// /api/v1/stream Server-Sent Events, plus the history view. Plain ES modules, no build step;
// the charts are uPlot (vendor/, a classic script loaded before this one). Runs under a CSP
// that forbids eval and inline styles in markup (element.style from here is fine).
//
// Nothing is drawn before the window length is known: it is the server's `--window`, the first
// resolution of /api/v1/resolutions. Nor before the event types are: the server's
// `--event-types`, read once from /api/v1/event-types (the seed's four when that read fails).

import { alertMatches, feedAlerts, goesOnTop, MAX_FEED_ITEMS, rememberAlert, trimAlerts } from './alerts.js';
import { getAllPages, getJson, onReachability, quietly } from './api.js';
import { createLiveChart, liveChartSize } from './charts.js';
import { sameList, topCities, trackedCities } from './cities.js';
import { API, parseEventTypes, SEED_TYPES, shownTypes, typesNote } from './constants.js';
import { $, el, setTextAll } from './dom.js';
import { durationText, fmtClock, fmtHm, fmtInt, minutesText, spanLabel } from './format.js';
import { parseResolutions } from './history.js';
import { createHistoryView } from './history-view.js';
import { loadIngest, renderIngest } from './ingest.js';
import { startStream } from './live.js';
import { alertItem, deadItem, gridHeadRow, gridRow, lateItem, renderDeadKinds, renderHealth } from './panels.js';
import { loadSinks, renderSinks } from './sinks.js';
import {
  chartWindowCount, cityRates, largestCount, mergeWindow, pruneWindows, windowStartOf, windowStarts,
  windowsLimit,
} from './windows.js';

const TOP_N = 8;
const CITY_PAGES = 5;

const state = {
  cityTotals: new Map(), // city -> total_events
  cityByLower: new Map(), // lower-case name -> name, for the search box
  top: [], // top N city names, sorted by name so colours stay put while the set does
  picked: [], // cities the user added, in the order added
  windows: new Map(), // city -> Map("type|startMs" -> {count, sev}), of base windows
  alerts: new Map(), // event_id -> alert
  filter: { city: '', severity: '' },
  lastTotals: { late: null, dead: null },
  health: null,
  apiOk: true, // the last REST call got an answer
  resolutions: null, // /resolutions, finest first; null until read
  spanMs: null, // the base window's length (`--window`); null until read: nothing is drawn before
  types: null, // the event types (`--event-types`), set once at start; nothing is read before
};

// The stream's status ({down, lastMessage}); replaced when the stream starts.
let stream = { down: false, lastMessage: 0 };
let history = null;
let alertsAfterConnect = false;

const tracked = () => trackedCities(state.top, state.picked);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The starts of the live chart's windows, oldest first, ending with the one now filling. */
function chartStarts() {
  return windowStarts(Date.now(), state.spanMs, chartWindowCount(state.spanMs));
}

// ---------- the event types ----------

/**
 * Reads /event-types: the server's event types, in its order. When the read fails (no answer,
 * an error, or a body off the contract), the page carries on with the seed's four.
 */
async function loadEventTypes() {
  try {
    return parseEventTypes(await getJson('/event-types'));
  } catch {
    return [...SEED_TYPES];
  }
}

// Sets the types, once: the grid's header and its note follow them (the history view draws its
// charts from them when created).
function setTypes(types) {
  state.types = types;
  $('window-grid-head').replaceChildren(gridHeadRow(types));
  const note = $('window-types-note');
  note.textContent = typesNote(types);
  note.hidden = !note.textContent;
}

// ---------- the window length ----------

let resolutionsRead = null; // the read of /resolutions running, if any

/**
 * Reads /resolutions; the first (finest) is the base window. Returns them, finest first. Calls
 * made while a read runs share it.
 */
function loadResolutions() {
  resolutionsRead ??= getJson('/resolutions')
    .then((body) => {
      const list = parseResolutions(body);
      state.resolutions = list;
      setSpan(list[0].spanMs);
      return list;
    })
    .finally(() => {
      resolutionsRead = null;
    });
  return resolutionsRead;
}

// A new window length (the first one read, or a server restarted with another `--window`):
// counts of another length do not mix, so the windows are read again.
function setSpan(spanMs) {
  if (spanMs === state.spanMs) return;
  state.spanMs = spanMs;
  state.windows.clear();
  setTextAll('window-label', spanLabel(spanMs));
  setTextAll('window-minutes', minutesText(spanMs));
  $('rate-range').textContent = `last ${durationText(chartWindowCount(spanMs) * spanMs)}`;
  $('window-status').hidden = true;
  scheduleRender();
  tracked().forEach((c) => quietly(loadWindows(c)));
}

// Until the window length is known, say so (do not guess), and keep asking.
async function waitForWindow() {
  while (state.spanMs == null) {
    try {
      await loadResolutions();
    } catch (err) {
      $('window-status').textContent = `Waiting for the window size: ${API}/resolutions gave `
        + `“${err.message}”. Retrying…`;
      await sleep(3000);
    }
  }
}

// ---------- REST ----------

async function loadCities() {
  const cities = await getAllPages('/cities?limit=1000', 'cities', CITY_PAGES);
  state.cityTotals = new Map(cities.map((c) => [c.city, c.total_events]));
  state.cityByLower = new Map(cities.map((c) => [c.city.toLowerCase(), c.city]));
  renderDatalist();
  history?.setCities([...state.cityTotals.keys()], topCities(cities, 1)[0]);
  return setTop(topCities(cities, TOP_N));
}

// Replaces the top cities; returns the cities that just became tracked.
function setTop(top) {
  if (sameList(top, state.top)) return [];
  const before = new Set(tracked());
  state.top = top;
  forgetUntracked();
  renderCityFilter();
  scheduleRender();
  return tracked().filter((c) => !before.has(c));
}

// The periodic refresh: the ranking, and the windows of every city shown. The stream sends
// changes of each city's current and previous window only (and of the first 1 000 cities by
// name), so older points that late-ish events still move, and cities beyond those, catch up
// here.
async function refreshCities() {
  await loadCities();
  await Promise.all(tracked().map((c) => quietly(loadWindows(c))));
}

// The base windows of a city over the live chart's span (and a little more), newest first.
async function loadWindows(city) {
  const spanMs = state.spanMs;
  if (spanMs == null) return; // read once the window length is known (setSpan)
  const need = windowsLimit(chartWindowCount(spanMs), state.types.length);
  const limit = Math.min(1000, need);
  const resolution = encodeURIComponent(state.resolutions[0].name);
  const items = await getAllPages(`/aggregations?city=${encodeURIComponent(city)}&resolution=${resolution}`
    + `&limit=${limit}`, 'aggregations', Math.ceil(need / limit));
  if (!tracked().includes(city) || state.spanMs !== spanMs) return;
  // Merged, not replaced: a stream update that arrived while this read ran may be newer. The
  // city's windows are known from here, even when there are none (zeros, not gaps).
  const byKey = state.windows.get(city) ?? new Map();
  state.windows.set(city, byKey);
  const oldestMs = chartStarts()[0] - spanMs;
  items.forEach((w) => mergeWindow(byKey, w, { oldestMs, spanMs }));
  scheduleRender();
}

async function loadAlerts() {
  const cityParam = state.filter.city ? `&city=${encodeURIComponent(state.filter.city)}` : '';
  const body = await getJson(`/alerts?limit=100${cityParam}`);
  body.alerts.forEach((a) => rememberAlert(state.alerts, a));
  state.alerts = trimAlerts(state.alerts);
  renderFeed();
}

async function loadStats() {
  applyStats(await getJson('/stats'));
}

async function loadHealth() {
  applyHealth(await getJson('/health'));
}

async function loadLate() {
  const body = await getJson('/late-events?limit=5');
  $('late-list').replaceChildren(...body.late_events.map(lateItem));
}

async function loadDead() {
  const body = await getJson('/dead-letters?limit=5');
  $('dead-list').replaceChildren(...body.dead_letters.map(deadItem));
}

// The alert delivery panel. A read that comes while one runs shares it.
let sinksRead = null;
function loadSinkPanel() {
  sinksRead ??= loadSinks(getJson).then(renderSinks).finally(() => {
    sinksRead = null;
  });
  return sinksRead;
}

// The ingest panel. Its rates are measured from the previous read (`ingestBaseline`); a read
// that comes while one runs shares it.
let ingestRead = null;
let ingestBaseline = null;
function loadIngestPanel() {
  ingestRead ??= loadIngest(getJson, ingestBaseline)
    .then((view) => {
      ingestBaseline = view.baseline;
      renderIngest(view);
    })
    .finally(() => {
      ingestRead = null;
    });
  return ingestRead;
}

// Reloads every snapshot. Calls that come while one runs make it run once more afterwards.
let reloading = null;
let reloadAgain = false;
function reloadSnapshots() {
  if (reloading) {
    reloadAgain = true;
    return reloading;
  }
  reloading = Promise.allSettled([
    quietly(loadResolutions()), // a restarted server may window differently
    quietly(loadCities()).then(() => Promise.all(tracked().map((c) => quietly(loadWindows(c))))),
    quietly(loadAlerts()),
    quietly(loadStats()),
    quietly(loadHealth()),
    quietly(loadLate()),
    quietly(loadDead()),
    quietly(loadSinkPanel()),
    quietly(loadIngestPanel()),
  ]).finally(() => {
    reloading = null;
    if (reloadAgain) {
      reloadAgain = false;
      reloadSnapshots();
    }
  });
  return reloading;
}

// ---------- state updates ----------

// A live window of a tracked city, within the chart's span.
function mergeLiveWindow(w) {
  if (state.spanMs == null || !tracked().includes(w.city)) return;
  const byKey = state.windows.get(w.city) ?? new Map();
  if (!mergeWindow(byKey, w, { oldestMs: chartStarts()[0] - state.spanMs, spanMs: state.spanMs })) return;
  state.windows.set(w.city, byKey);
  scheduleRender();
}

// A city we have not heard of may belong in the top N, and belongs in the search list.
let cityRefreshTimer = null;
function onLiveWindow(w) {
  const listFull = state.cityTotals.size >= CITY_PAGES * 1000; // we read at most that many
  if (!state.cityTotals.has(w.city) && !listFull && !cityRefreshTimer) {
    cityRefreshTimer = setTimeout(() => {
      cityRefreshTimer = null;
      quietly(refreshCities());
    }, 2000);
  }
  mergeLiveWindow(w);
}

// Drops windows of cities no longer shown, and windows older than the chart's span.
function forgetUntracked() {
  const shown = new Set(tracked());
  for (const city of [...state.windows.keys()]) {
    if (!shown.has(city)) state.windows.delete(city);
  }
  if (state.spanMs == null) return;
  const oldest = chartStarts()[0];
  for (const byKey of state.windows.values()) pruneWindows(byKey, oldest);
}

function applyStats(s) {
  $('stat-total').textContent = fmtInt(s.total_events_processed);
  $('stat-high').textContent = fmtInt(s.high_severity_alerts);
  $('stat-critical').textContent = fmtInt(s.critical_alerts);
  // The stream's stats carry the processors' rate (records checkpointed per second).
  if ('records_per_second' in s) {
    const rate = s.records_per_second == null ? '—' : s.records_per_second.toFixed(1);
    $('stat-rate').textContent = rate;
    $('health-rate').textContent = s.records_per_second == null ? 'measuring…' : `${rate} records/s`;
    if (alertsAfterConnect) {
      // The stream reports alerts stored after its reader's first look; reading the list
      // once that look is done closes the gap between it and the list loaded at connect.
      alertsAfterConnect = false;
      quietly(loadAlerts());
    }
  }
  $('late-total').textContent = fmtInt(s.late_events);
  $('dead-total').textContent = fmtInt(s.dead_letters);
  renderDeadKinds(s.dead_letters_by_kind || {});
  refreshListsOnChange(s.late_events, s.dead_letters);
}

// The latest-5 lists follow the totals: reload one when its total moved.
function refreshListsOnChange(late, dead) {
  if (state.lastTotals.late !== null && late !== state.lastTotals.late) quietly(loadLate());
  if (state.lastTotals.dead !== null && dead !== state.lastTotals.dead) quietly(loadDead());
  state.lastTotals = { late, dead };
}

function applyHealth(h) {
  state.health = h;
  renderHealth(h);
  updateBanner();
}

// ---------- rendering: chart and grid ----------

let chart = null;
let chartCities = [];
let chartSpan = null;

function renderChart() {
  if (typeof globalThis.uPlot === 'undefined' || state.spanMs == null) return;
  const cities = tracked();
  const starts = chartStarts();
  const data = [starts.map((s) => s / 1000), ...cities.map((c) => cityRates(state.windows.get(c), starts, state.spanMs, state.types))];
  const box = $('rate-chart');
  if (!chart || !sameList(cities, chartCities) || chartSpan !== state.spanMs) {
    chart?.destroy();
    chart = createLiveChart(box, cities, data, state.spanMs);
    chartCities = cities;
    chartSpan = state.spanMs;
  } else {
    chart.setData(data);
  }
  // For tests and curious users: which cities are drawn, and how many non-zero points.
  box.dataset.cities = JSON.stringify(cities);
  box.dataset.points = String(data.slice(1).flat().filter((v) => v > 0).length);
}

// Only width changes matter; the chart sets the box's height itself.
function watchChartWidth() {
  let width = 0;
  new ResizeObserver(() => {
    const size = liveChartSize($('rate-chart'));
    if (chart && size.width !== width) chart.setSize(size);
    width = size.width;
  }).observe($('rate-chart'));
}

function renderGrid() {
  if (state.spanMs == null) return;
  const cur = windowStartOf(Date.now(), state.spanMs);
  const prev = cur - state.spanMs;
  $('win-cur').textContent = `${fmtHm(cur)}–${fmtHm(cur + state.spanMs)}`;
  $('win-prev').textContent = `${fmtHm(prev)}–${fmtHm(cur)}`;
  const cities = tracked();
  const max = largestCount(state.windows, cities, [cur, prev], shownTypes(state.types));
  const rows = cities.flatMap((city) => [
    gridRow(state.windows.get(city), city, 'current', 'now', cur, max, true, state.types),
    gridRow(state.windows.get(city), city, 'previous', 'before', prev, max, false, state.types),
  ]);
  document.querySelector('#window-grid tbody').replaceChildren(...rows);
}

// ---------- rendering: alerts ----------

function renderFeed() {
  const items = feedAlerts(state.alerts, state.filter);
  $('alert-feed').replaceChildren(...items.map(alertItem));
  $('alert-empty').hidden = items.length > 0;
}

// A live alert goes straight to the top of the feed, or, when it is older than the top (it
// came out of order), the feed is drawn again in order.
function onLiveAlert(a) {
  if (!rememberAlert(state.alerts, a)) return;
  state.alerts = trimAlerts(state.alerts);
  const kept = state.alerts.get(a.event_id);
  if (!kept || !alertMatches(kept, state.filter)) return; // (not kept: older than all those kept)
  const feed = $('alert-feed');
  if (!goesOnTop(kept, state.alerts.get(feed.firstElementChild?.dataset.eventId))) {
    renderFeed();
    return;
  }
  feed.prepend(alertItem(kept));
  while (feed.children.length > MAX_FEED_ITEMS) feed.lastElementChild.remove();
  $('alert-empty').hidden = true;
}

function renderCityFilter() {
  const select = $('alert-city');
  const cities = [...new Set([...tracked(), state.filter.city].filter(Boolean))]
    .sort((a, b) => a.localeCompare(b));
  const options = [new Option('All cities', ''), ...cities.map((c) => new Option(c, c))];
  select.replaceChildren(...options);
  select.value = state.filter.city;
}

function setCityFilter(city) {
  state.filter.city = city;
  renderCityFilter();
  renderFeed();
  quietly(loadAlerts()); // the recent alerts of that city, which the global page may lack
}

// ---------- banner and connection line ----------

function bannerMessage() {
  if (!state.apiOk || stream.down) {
    return 'Cannot reach the CityStream API. Retrying… (figures below may be stale)';
  }
  const h = state.health;
  if (!h || h.status === 'UP') return '';
  if (h.status === 'DOWN') return 'Store DOWN: the result store does not answer. Figures below may be stale.';
  return `Store ${h.status}: some store calls are failing, though the store still answers. Figures may lag.`;
}

function updateBanner() {
  const msg = bannerMessage();
  const banner = $('banner');
  if (banner.textContent !== msg) banner.textContent = msg;
  banner.hidden = !msg;
  $('conn').textContent = stream.down || !state.apiOk ? 'Offline, retrying…'
    : `Live · last update ${fmtClock(stream.lastMessage || Date.now())}`;
}

// Going from unreachable to reachable reloads every snapshot: events were missed meanwhile.
function setApiOk(ok) {
  if (ok === state.apiOk) return;
  state.apiOk = ok;
  updateBanner();
  if (ok) reloadSnapshots();
}

// ---------- city search ----------

let datalistNames = '';
function renderDatalist() {
  const names = [...state.cityTotals.keys()];
  if (names.join('\n') === datalistNames) return;
  datalistNames = names.join('\n');
  $('city-list').replaceChildren(...names.map((n) => new Option(n, n)));
}

function pickCity(name) {
  if (!state.picked.includes(name)) state.picked.push(name);
  renderPicked();
  setCityFilter(name);
  scheduleRender();
  if (!state.windows.has(name)) quietly(loadWindows(name));
}

function unpickCity(name) {
  state.picked = state.picked.filter((c) => c !== name);
  forgetUntracked();
  renderPicked();
  if (state.filter.city === name) setCityFilter('');
  else renderCityFilter();
  scheduleRender();
}

function renderPicked() {
  const chips = state.picked.map((name) => {
    const li = el('li', 'chip', name);
    li.dataset.city = name;
    const btn = el('button', 'chip-x', '×');
    btn.type = 'button';
    btn.setAttribute('aria-label', `Remove ${name}`);
    btn.addEventListener('click', () => unpickCity(name));
    li.append(btn);
    return li;
  });
  $('picked').replaceChildren(...chips);
}

async function pickFromSearch() {
  const input = $('city-search');
  const wanted = input.value.trim();
  if (!wanted) return;
  let name = state.cityByLower.get(wanted.toLowerCase());
  if (!name) {
    await quietly(refreshCities()); // our list may be older than the city
    name = state.cityByLower.get(wanted.toLowerCase());
  }
  if (!name) {
    $('city-hint').textContent = `No stored events for “${wanted}”.`;
    return;
  }
  $('city-hint').textContent = '';
  input.value = '';
  pickCity(name);
}

function wireControls() {
  $('city-form').addEventListener('submit', (e) => {
    e.preventDefault();
    pickFromSearch();
  });
  // Choosing a datalist suggestion picks it at once.
  $('city-search').addEventListener('input', (e) => {
    $('city-hint').textContent = '';
    if (e.inputType === 'insertReplacementText' && state.cityByLower.has(e.target.value.trim().toLowerCase())) {
      pickFromSearch();
    }
  });
  $('alert-city').addEventListener('change', (e) => setCityFilter(e.target.value));
  $('alert-severity').addEventListener('change', (e) => {
    state.filter.severity = e.target.value;
    renderFeed();
  });
}

// ---------- scheduling ----------

// Stream updates come in bursts; draw at most a few times a second.
let renderPending = false;
function scheduleRender() {
  if (renderPending) return;
  renderPending = true;
  setTimeout(() => {
    renderPending = false;
    renderChart();
    renderGrid();
  }, 250);
}

function startTimers() {
  // Windows roll over with the clock even when nothing arrives.
  setInterval(() => {
    forgetUntracked();
    scheduleRender();
  }, 10000);
  // The ranking of cities drifts slowly; the search list grows as cities appear.
  setInterval(() => quietly(refreshCities()), 30000);
  // A safety net for the lists, should the stream be quiet; also how an outage ends
  // when the stream is not the first to notice.
  setInterval(() => {
    if (!state.apiOk || stream.down) quietly(loadHealth());
  }, 3000);
  setInterval(() => {
    quietly(loadLate());
    quietly(loadDead());
  }, 30000);
  // Deliveries are not in the stream: the alert delivery panel is read again every 10 s.
  setInterval(() => quietly(loadSinkPanel()), 10000);
  // Nor are the ingest counts: read every 5 s, the rates are over those 5 s.
  setInterval(() => quietly(loadIngestPanel()), 5000);
}

async function start() {
  $('top-n').textContent = String(TOP_N);
  onReachability(setApiOk);
  // The types first: the grid, the history charts and the windows asked for depend on them.
  setTypes(await loadEventTypes());
  wireControls();
  watchChartWidth();
  history = createHistoryView({ loadResolutions, types: state.types });
  stream = startStream({
    url: `${API}/stream`,
    handlers: { alert: onLiveAlert, window: onLiveWindow, stats: applyStats, health: applyHealth },
    onConnect: () => {
      alertsAfterConnect = true;
    },
    onStatus: updateBanner,
    reload: reloadSnapshots,
  });
  startTimers();
  quietly(waitForWindow());
  reloadSnapshots();
}

start();
