// CityStream dashboard: REST snapshots from /api/v1, kept live by the /api/v1/stream
// Server-Sent Events. Plain JS, no build step; the chart is uPlot (vendor/). Runs under a CSP
// that forbids eval and inline styles in markup (element.style from here is fine).
'use strict';

(() => {
  const API = '/api/v1';
  const TOP_N = 8;
  const WINDOW_MS = 5 * 60 * 1000;
  const HOUR_WINDOWS = 12;
  const TYPES = ['traffic', 'weather', 'incident', 'construction'];
  const SEVERITIES = ['low', 'medium', 'high', 'critical'];
  const SEV_LETTER = { low: 'L', medium: 'M', high: 'H', critical: 'C' };
  const MAX_FEED_ITEMS = 200;
  const MAX_ALERTS_KEPT = 1000;
  const CITY_PAGES = 5;
  // Okabe–Ito (colour-blind safe), yellow swapped for grey: yellow vanishes on white.
  const PALETTE = ['#0072B2', '#E69F00', '#009E73', '#CC79A7', '#D55E00', '#56B4E9', '#000000', '#7F7F7F'];
  const DASHES = [[], [10, 4], [2, 3], [12, 4, 3, 4], [6, 6], [1, 4], [18, 6], [8, 3, 2, 3, 2, 3]];
  const SHAPES = ['circle', 'square', 'triangle', 'diamond', 'cross'];

  const state = {
    cityTotals: new Map(), // city -> total_events
    cityByLower: new Map(), // lower-case name -> name, for the search box
    top: [], // top N city names, sorted by name so colours stay put while the set does
    picked: [], // cities the user added, in the order added
    windows: new Map(), // city -> Map("type|startMs" -> {count, sev})
    alerts: new Map(), // event_id -> alert
    filter: { city: '', severity: '' },
    lastTotals: { late: null, dead: null },
    health: null,
    apiOk: true, // the last REST call got an answer
    streamDown: false, // the event stream failed and has not come back
    lastStreamMessage: 0,
  };

  const $ = (id) => document.getElementById(id);
  const numberFormat = new Intl.NumberFormat();

  // ---------- small helpers ----------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = text;
    return node;
  }

  function fmtInt(n) {
    return n == null ? '—' : numberFormat.format(n);
  }

  function fmtRate(perMin) {
    return perMin == null ? '—' : `${perMin.toFixed(1)}/min`;
  }

  // Formatters are costly to make; a busy feed formats hundreds of times a second.
  const hmOptions = { hour: '2-digit', minute: '2-digit', hour12: false };
  const clockFormat = new Intl.DateTimeFormat([], { ...hmOptions, second: '2-digit' });
  const hmFormat = new Intl.DateTimeFormat([], hmOptions);

  function fmtClock(ms) {
    return clockFormat.format(ms);
  }

  function fmtHm(ms) {
    return hmFormat.format(ms);
  }

  function fmtDuration(ms) {
    if (ms == null || !Number.isFinite(ms)) return '—';
    const s = Math.round(Math.abs(ms) / 1000);
    const text = s < 60 ? `${s} s` : s < 3600 ? `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`
      : `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')} min`;
    return ms < 0 ? `${text} ahead` : text;
  }

  function timeEl(iso) {
    const node = el('time', null, fmtClock(Date.parse(iso)));
    node.dateTime = iso;
    node.title = iso;
    return node;
  }

  function sevBadge(severity) {
    const known = SEVERITIES.includes(severity) ? severity : 'unknown';
    return el('span', `sev sev-${known}`, String(severity).toUpperCase());
  }

  function sameList(a, b) {
    return a.length === b.length && a.every((x, i) => x === b[i]);
  }

  function currentWindowStart() {
    return Math.floor(Date.now() / WINDOW_MS) * WINDOW_MS;
  }

  // The starts of the last hour's windows, oldest first, ending with the one now filling.
  function windowStarts() {
    const cur = currentWindowStart();
    return Array.from({ length: HOUR_WINDOWS }, (_, i) => cur - (HOUR_WINDOWS - 1 - i) * WINDOW_MS);
  }

  function trackedCities() {
    return [...state.top, ...state.picked.filter((c) => !state.top.includes(c))];
  }

  // ---------- REST ----------

  // Any HTTP answer means the API is reachable; only network failures and time-outs mark it
  // down. /health answers 503 with a body when the store is DOWN, so its body is returned.
  async function getJson(path) {
    let res;
    try {
      res = await fetch(API + path, { headers: { accept: 'application/json' }, signal: AbortSignal.timeout(12000) });
    } catch (err) {
      setApiOk(false);
      throw err;
    }
    setApiOk(true);
    const body = await res.json().catch(() => null);
    if (!res.ok && !(path.startsWith('/health') && body)) {
      throw new Error(body?.message || `HTTP ${res.status}`);
    }
    return body;
  }

  async function getAllPages(path, key, maxPages) {
    const items = [];
    let cursor = null;
    for (let page = 0; page < maxPages; page++) {
      const body = await getJson(cursor ? `${path}&cursor=${encodeURIComponent(cursor)}` : path);
      items.push(...body[key]);
      cursor = body.next_cursor;
      if (!cursor) break;
    }
    return items;
  }

  // Loaders swallow their errors: the banner reports unreachability, and the next reload retries.
  function quietly(promise) {
    return promise.catch(() => undefined);
  }

  async function loadCities() {
    const cities = await getAllPages('/cities?limit=1000', 'cities', CITY_PAGES);
    state.cityTotals = new Map(cities.map((c) => [c.city, c.total_events]));
    state.cityByLower = new Map(cities.map((c) => [c.city.toLowerCase(), c.city]));
    renderDatalist();
    const top = [...cities]
      .sort((a, b) => b.total_events - a.total_events || a.city.localeCompare(b.city))
      .slice(0, TOP_N)
      .map((c) => c.city)
      .sort((a, b) => a.localeCompare(b));
    return setTop(top);
  }

  // Replaces the top cities; returns the cities that just became tracked.
  function setTop(top) {
    if (sameList(top, state.top)) return [];
    const before = new Set(trackedCities());
    state.top = top;
    forgetUntracked();
    renderCityFilter();
    scheduleRender();
    return trackedCities().filter((c) => !before.has(c));
  }

  // The periodic refresh: the ranking, and the windows of every city shown. The stream sends
  // changes of each city's current and previous window only (and of the first 1 000 cities by
  // name), so older points that late-ish events still move, and cities beyond those, catch up
  // here.
  async function refreshCities() {
    await loadCities();
    await Promise.all(trackedCities().map((c) => quietly(loadWindows(c))));
  }

  async function loadWindows(city) {
    const body = await getJson(`/aggregations?city=${encodeURIComponent(city)}&limit=60`);
    if (!trackedCities().includes(city)) return;
    // Merged, not replaced: a stream update that arrived while this read ran may be newer.
    body.aggregations.forEach(mergeWindow);
    scheduleRender();
  }

  async function loadAlerts() {
    const cityParam = state.filter.city ? `&city=${encodeURIComponent(state.filter.city)}` : '';
    const body = await getJson(`/alerts?limit=100${cityParam}`);
    body.alerts.forEach(rememberAlert);
    trimAlerts();
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

  // Reloads every snapshot. Calls that come while one runs make it run once more afterwards.
  let reloading = null;
  let reloadAgain = false;
  function reloadSnapshots() {
    if (reloading) {
      reloadAgain = true;
      return reloading;
    }
    reloading = Promise.allSettled([
      quietly(loadCities()).then(() => Promise.all(trackedCities().map((c) => quietly(loadWindows(c))))),
      quietly(loadAlerts()),
      quietly(loadStats()),
      quietly(loadHealth()),
      quietly(loadLate()),
      quietly(loadDead()),
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

  function mergeWindow(w) {
    if (!trackedCities().includes(w.city)) return;
    const start = Date.parse(w.window_start);
    if (start < windowStarts()[0] - WINDOW_MS) return;
    if (!state.windows.has(w.city)) state.windows.set(w.city, new Map());
    const byKey = state.windows.get(w.city);
    const key = `${w.event_type}|${start}`;
    const old = byKey.get(key);
    // A window only grows (it is the sum of its events), and a REST answer may be older than
    // a stream update that overtook it: keep whichever has counted more.
    if (old && old.count >= w.event_count) return;
    byKey.set(key, { count: w.event_count, sev: { ...w.severity_counts } });
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
    mergeWindow(w);
  }

  function windowAt(city, type, start) {
    return state.windows.get(city)?.get(`${type}|${start}`) ?? null;
  }

  // Drops windows of cities no longer shown, and windows older than the chart's hour.
  function forgetUntracked() {
    const tracked = new Set(trackedCities());
    const oldest = windowStarts()[0];
    for (const [city, byKey] of state.windows) {
      if (!tracked.has(city)) {
        state.windows.delete(city);
        continue;
      }
      for (const key of byKey.keys()) {
        if (Number(key.split('|')[1]) < oldest) byKey.delete(key);
      }
    }
  }

  // Keeps the alert with its time parsed once (`at`), for sorting.
  function rememberAlert(a) {
    if (state.alerts.has(a.event_id)) return false;
    state.alerts.set(a.event_id, { ...a, at: Date.parse(a.timestamp) });
    return true;
  }

  // Trims in steps of 100, so that a busy feed does not sort on every alert.
  function trimAlerts() {
    if (state.alerts.size <= MAX_ALERTS_KEPT + 100) return;
    const keep = [...state.alerts.values()].sort(byTimeDesc).slice(0, MAX_ALERTS_KEPT);
    state.alerts = new Map(keep.map((a) => [a.event_id, a]));
  }

  function byTimeDesc(a, b) {
    return b.at - a.at || (b.event_id < a.event_id ? -1 : 1);
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

  // REST /health nests partitions under pipeline; the stream's health event does not.
  function applyHealth(h) {
    state.health = h;
    const partitions = h.partitions ?? h.pipeline?.partitions ?? [];
    $('health-status').replaceChildren(el('span', `status status-${String(h.status).toLowerCase()}`, h.status));
    $('health-store').textContent = h.store ? `${h.store.backend}: ${h.store.status}` : '—';
    $('health-checked').textContent = fmtClock(Date.parse(h.checked_at ?? h.timestamp) || Date.now());
    const rows = [...partitions]
      .sort((a, b) => a.source.localeCompare(b.source) || a.partition - b.partition)
      .map(partitionRow);
    $('health-partitions').replaceChildren(...rows);
    updateBanner();
  }

  // ---------- rendering: chart ----------

  let chart = null;
  let chartCities = [];

  // SVG path of a marker shape centred on (x, y); used both on the canvas (via Path2D) and in
  // the legend's swatches, so they match.
  function shapePath(shape, x, y, r) {
    switch (shape) {
      case 'square': return `M${x - r},${y - r}h${2 * r}v${2 * r}h${-2 * r}Z`;
      case 'triangle': return `M${x},${y - r}L${x + r},${y + r * 0.8}L${x - r},${y + r * 0.8}Z`;
      case 'diamond': return `M${x},${y - r * 1.2}L${x + r},${y}L${x},${y + r * 1.2}L${x - r},${y}Z`;
      case 'cross': return `M${x - r},${y - r}L${x + r},${y + r}M${x + r},${y - r}L${x - r},${y + r}`;
      default: return `M${x - r},${y}a${r},${r} 0 1,0 ${2 * r},0a${r},${r} 0 1,0 ${-2 * r},0Z`;
    }
  }

  // A uPlot points path builder drawing `shape` at every non-null point.
  function markerPaths(shape) {
    return (u, seriesIdx, idx0, idx1) => {
      const r = 3.5 * devicePixelRatio;
      let d = '';
      for (let i = idx0; i <= idx1; i++) {
        const v = u.data[seriesIdx][i];
        if (v == null) continue;
        d += shapePath(shape, u.valToPos(u.data[0][i], 'x', true), u.valToPos(v, 'y', true), r);
      }
      const path = new Path2D(d);
      return { stroke: path, fill: path, clip: null, flags: 0 };
    };
  }

  function seriesStyle(i) {
    return {
      colour: PALETTE[i % PALETTE.length],
      dash: DASHES[i % DASHES.length],
      shape: SHAPES[i % SHAPES.length],
      hollow: Math.floor(i / SHAPES.length) % 2 === 1,
    };
  }

  function chartSeries(city, i) {
    const st = seriesStyle(i);
    return {
      label: city,
      stroke: st.colour,
      width: 2,
      dash: st.dash,
      // Away from the cursor, the legend shows the last complete window.
      value: (u, v, si, idx) => fmtRate(idx == null ? u.data[si][u.data[si].length - 2] : v),
      points: {
        show: true,
        size: 8,
        width: 1.5,
        stroke: st.colour,
        fill: st.hollow ? '#fff' : st.colour,
        paths: markerPaths(st.shape),
      },
    };
  }

  function chartSize() {
    const width = Math.max(200, $('rate-chart').clientWidth);
    return { width, height: width < 500 ? 280 : 300 };
  }

  function createChart(cities, data) {
    const axisStyle = { stroke: '#333', grid: { stroke: '#e3e3e3' }, ticks: { stroke: '#ccc' } };
    const opts = {
      ...chartSize(),
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, Math.ceil((max || 0) * 1.15))] } },
      axes: [axisStyle, { ...axisStyle, label: 'events/min, 5-minute windows', size: 50 }],
      series: [
        { label: 'Window', value: (u, v) => (v == null ? 'last complete' : fmtHm(v * 1000)) },
        ...cities.map(chartSeries),
      ],
      legend: { live: true },
    };
    const u = new uPlot(opts, data, $('rate-chart'));
    decorateLegend(u);
    return u;
  }

  // Replaces uPlot's colour-only legend markers with a sample of the line: colour, dash and marker.
  function decorateLegend(u) {
    u.root.querySelectorAll('.u-legend .u-series').forEach((row, i) => {
      const marker = row.querySelector('.u-marker');
      if (i === 0 || !marker) return;
      marker.replaceChildren(lineSwatch(seriesStyle(i - 1)));
      marker.classList.add('swatch');
    });
  }

  function lineSwatch(st) {
    const NS = 'http://www.w3.org/2000/svg';
    const svg = document.createElementNS(NS, 'svg');
    svg.setAttribute('viewBox', '0 0 36 12');
    svg.setAttribute('aria-hidden', 'true');
    const svgEl = (tag, attrs) => {
      const node = document.createElementNS(NS, tag);
      Object.entries(attrs).forEach(([k, v]) => node.setAttribute(k, v));
      return node;
    };
    svg.append(
      svgEl('line', { x1: 0, y1: 6, x2: 36, y2: 6, stroke: st.colour, 'stroke-width': 2,
        'stroke-dasharray': st.dash.join(' ') || 'none' }),
      svgEl('path', { d: shapePath(st.shape, 18, 6, 3.5), stroke: st.colour, 'stroke-width': 1.5,
        fill: st.hollow ? '#fff' : st.colour }),
    );
    return svg;
  }

  // Events per minute of a city in each window: all types summed, ÷ 5. null until the city's
  // windows have been loaded (unknown is not zero).
  function cityRates(city, starts) {
    if (!state.windows.has(city)) return starts.map(() => null);
    return starts.map((s) => TYPES.reduce((sum, t) => sum + (windowAt(city, t, s)?.count ?? 0), 0) / 5);
  }

  function renderChart() {
    if (typeof uPlot === 'undefined') return;
    const cities = trackedCities();
    const starts = windowStarts();
    const data = [starts.map((s) => s / 1000), ...cities.map((c) => cityRates(c, starts))];
    if (!chart || !sameList(cities, chartCities)) {
      chart?.destroy();
      chart = createChart(cities, data);
      chartCities = cities;
    } else {
      chart.setData(data);
    }
    // For tests and curious users: which cities are drawn, and how many non-zero points.
    const box = $('rate-chart');
    box.dataset.cities = JSON.stringify(cities);
    box.dataset.points = String(data.slice(1).flat().filter((v) => v > 0).length);
  }

  // Only width changes matter; the chart sets the box's height itself.
  function watchChartWidth() {
    let width = 0;
    new ResizeObserver(() => {
      const size = chartSize();
      if (chart && size.width !== width) chart.setSize(size);
      width = size.width;
    }).observe($('rate-chart'));
  }

  // ---------- rendering: window grid ----------

  function renderGrid() {
    const cur = currentWindowStart();
    const prev = cur - WINDOW_MS;
    $('win-cur').textContent = `${fmtHm(cur)}–${fmtHm(cur + WINDOW_MS)}`;
    $('win-prev').textContent = `${fmtHm(prev)}–${fmtHm(cur)}`;
    let max = 1;
    for (const city of trackedCities()) {
      for (const t of TYPES) {
        max = Math.max(max, windowAt(city, t, cur)?.count ?? 0, windowAt(city, t, prev)?.count ?? 0);
      }
    }
    const rows = trackedCities().flatMap((city) => [
      gridRow(city, 'current', 'now', cur, max, true),
      gridRow(city, 'previous', 'before', prev, max, false),
    ]);
    document.querySelector('#window-grid tbody').replaceChildren(...rows);
  }

  function gridRow(city, which, label, start, max, first) {
    const tr = el('tr', first ? 'first' : null);
    tr.dataset.city = city;
    tr.dataset.window = which;
    if (first) {
      const th = el('th', 'city', city);
      th.scope = 'row';
      th.rowSpan = 2;
      tr.append(th);
    }
    tr.append(el('td', 'when', label));
    const total = { count: 0, sev: {} };
    for (const t of TYPES) {
      const w = windowAt(city, t, start);
      tr.append(countCell(w, t, max));
      total.count += w?.count ?? 0;
      for (const s of SEVERITIES) total.sev[s] = (total.sev[s] ?? 0) + (w?.sev[s] ?? 0);
    }
    tr.append(el('td', 'num total', fmtInt(total.count)));
    const mix = el('td', 'mix');
    mix.append(severityMix(total.sev, total.count));
    tr.append(mix);
    return tr;
  }

  // A count printed in its cell, shaded by size (one hue, so lightness carries it).
  function countCell(w, type, max) {
    const count = w?.count ?? 0;
    const td = el('td', 'num', fmtInt(count));
    const alpha = count ? 0.08 + 0.92 * (count / max) : 0;
    td.style.backgroundColor = `rgba(0, 114, 178, ${alpha})`;
    if (alpha > 0.8) td.classList.add('dark'); // white text from where it reads better than black
    td.title = `${type}: ${SEVERITIES.map((s) => `${s} ${w?.sev[s] ?? 0}`).join(', ')}`;
    return td;
  }

  function severityMix(sev, total) {
    const box = el('div', 'mixbox');
    const bar = el('div', 'sevbar');
    bar.setAttribute('aria-hidden', 'true');
    for (const s of SEVERITIES) {
      if (!sev[s]) continue;
      const seg = el('span', `seg sev-${s}`);
      seg.style.width = `${(100 * sev[s]) / total}%`;
      bar.append(seg);
    }
    const text = el('span', 'mixtext', SEVERITIES.map((s) => `${SEV_LETTER[s]} ${sev[s] ?? 0}`).join(' · '));
    box.append(bar, text);
    return box;
  }

  // ---------- rendering: alerts ----------

  function alertMatches(a) {
    const { city, severity } = state.filter;
    return (!city || a.city === city) && (!severity || a.severity === severity);
  }

  function alertItem(a) {
    const li = el('li', `alert alert-${a.severity}`);
    li.dataset.eventId = a.event_id;
    li.append(eventHead(a), el('p', 'desc', a.description));
    return li;
  }

  // Severity, time, city and type: the head line of an alert or a late event.
  function eventHead(e) {
    const head = el('div', 'alert-head');
    head.append(sevBadge(e.severity), timeEl(e.timestamp), el('span', 'city', e.city), el('span', 'etype', e.event_type));
    return head;
  }

  function renderFeed() {
    const items = [...state.alerts.values()].filter(alertMatches).sort(byTimeDesc).slice(0, MAX_FEED_ITEMS);
    $('alert-feed').replaceChildren(...items.map(alertItem));
    $('alert-empty').hidden = items.length > 0;
  }

  // A live alert goes straight to the top of the feed, or, when it is older than the top (it
  // came out of order), the feed is drawn again in order.
  function onLiveAlert(a) {
    if (!rememberAlert(a)) return;
    trimAlerts();
    if (!alertMatches(a)) return;
    const feed = $('alert-feed');
    const top = state.alerts.get(feed.firstElementChild?.dataset.eventId);
    if (top && byTimeDesc(state.alerts.get(a.event_id), top) > 0) {
      renderFeed();
      return;
    }
    feed.prepend(alertItem(a));
    while (feed.children.length > MAX_FEED_ITEMS) feed.lastElementChild.remove();
    $('alert-empty').hidden = true;
  }

  function renderCityFilter() {
    const select = $('alert-city');
    const cities = [...new Set([...trackedCities(), state.filter.city].filter(Boolean))]
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

  // ---------- rendering: late events, dead letters, health ----------

  function lateItem(e) {
    const li = el('li', 'late');
    const watermark = Date.parse(e.watermark);
    const behind = fmtDuration(watermark - Date.parse(e.timestamp));
    li.append(eventHead(e), el('p', 'desc', `${behind} behind the watermark (${fmtClock(watermark)}); its window `
      + `${fmtHm(Date.parse(e.window_start))} was closed. Partition ${e.partition}, offset ${e.offset}.`));
    return li;
  }

  function deadItem(d) {
    const li = el('li', 'dead');
    const head = el('div', 'alert-head');
    const where = `${d.source} p${d.partition} @${d.offset}`;
    head.append(el('span', 'kind', d.kind), timeEl(d.received_at), el('span', 'etype', where));
    const prefix = d.payload_prefix;
    const payload = el('code', 'payload', prefix.length > 160 ? `${prefix.slice(0, 160)}…` : prefix);
    payload.title = `${d.payload_len} bytes`;
    li.append(head, el('p', 'desc', d.reason), payload);
    return li;
  }

  function renderDeadKinds(byKind) {
    const items = Object.entries(byKind)
      .sort((a, b) => b[1] - a[1])
      .map(([kind, n]) => el('li', null, `${kind}: ${fmtInt(n)}`));
    $('dead-kinds').replaceChildren(...items);
  }

  function partitionRow(p) {
    const tr = el('tr');
    const lag = p.watermark_lag_ms ?? (p.watermark ? Date.now() - Date.parse(p.watermark) : null);
    tr.append(
      el('td', 'source', p.source),
      el('td', 'num', String(p.partition)),
      el('td', 'num', fmtInt(p.next_offset)),
      el('td', null, p.watermark ? fmtClock(Date.parse(p.watermark)) : 'none yet'),
      el('td', 'num', fmtDuration(lag)),
    );
    return tr;
  }

  // ---------- banner and connection line ----------

  function bannerMessage() {
    if (!state.apiOk || state.streamDown) {
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
    $('conn').textContent = state.streamDown || !state.apiOk ? 'Offline, retrying…'
      : `Live · last update ${fmtClock(state.lastStreamMessage || Date.now())}`;
  }

  // Going from unreachable to reachable reloads every snapshot: events were missed meanwhile.
  function setApiOk(ok) {
    if (ok === state.apiOk) return;
    state.apiOk = ok;
    updateBanner();
    if (ok) reloadSnapshots();
  }

  // ---------- the event stream ----------

  let source = null;
  let errorTimer = null;
  let reconnectTimer = null;
  let needsReload = false;
  let alertsAfterConnect = false;
  let closedRetries = 0; // how often in a row the stream was refused (e.g. 503: too many streams)

  function connectStream() {
    alertsAfterConnect = true;
    source = new EventSource(`${API}/stream`);
    source.addEventListener('open', onStreamOpen);
    source.addEventListener('error', onStreamError);
    const handlers = {
      alert: onLiveAlert,
      window: onLiveWindow,
      stats: applyStats,
      health: applyHealth,
      reset: onReset,
    };
    for (const [name, handle] of Object.entries(handlers)) {
      source.addEventListener(name, (e) => onStreamMessage(e, handle));
    }
  }

  function onStreamMessage(e, handle) {
    state.lastStreamMessage = Date.now();
    let data;
    try {
      data = JSON.parse(e.data);
    } catch {
      return; // not ours to crash on
    }
    handle(data);
  }

  function onStreamOpen() {
    closedRetries = 0;
    alertsAfterConnect = true;
    clearTimeout(errorTimer);
    errorTimer = null;
    state.lastStreamMessage = Date.now();
    const recovering = state.streamDown || needsReload;
    state.streamDown = false;
    needsReload = false;
    updateBanner();
    if (recovering) reloadSnapshots();
  }

  // EventSource retries by itself (every 2 s, the server's `retry`) with Last-Event-ID, so a
  // short drop shows nothing. It gives up for good on an HTTP error status: then we start over.
  function onStreamError() {
    if (source.readyState === EventSource.CLOSED) {
      // Refused with a status: back off, with jitter, so that many pages do not come back at
      // the same moment (3 s, 6 s, … up to a minute).
      const backoff = Math.min(60000, 3000 * 2 ** closedRetries);
      closedRetries += 1;
      restartStream(backoff * (0.5 + Math.random() / 2));
    }
    if (errorTimer) return;
    errorTimer = setTimeout(() => {
      errorTimer = null;
      if (source.readyState !== EventSource.OPEN) {
        state.streamDown = true;
        needsReload = true;
        updateBanner();
      }
    }, 1000);
  }

  // A reset means messages were lost (the server restarted, or we fell behind): reload. A
  // flooded server can send one every few seconds, so reload at once, then at most every 10 s.
  let resetTimer = null;
  let lastResetReload = 0;
  function onReset() {
    if (resetTimer) return;
    resetTimer = setTimeout(() => {
      resetTimer = null;
      lastResetReload = Date.now();
      reloadSnapshots();
    }, Math.max(0, lastResetReload + 10000 - Date.now()));
  }

  function restartStream(delay) {
    source?.close();
    needsReload = true; // a new EventSource has no Last-Event-ID: nothing will be replayed
    clearTimeout(reconnectTimer);
    reconnectTimer = setTimeout(connectStream, delay);
  }

  // The server sends stats and health every 2 s (slower while its store hangs: each read may
  // take seconds); silence far longer than that means a dead connection the browser has not
  // noticed, such as a half-open TCP connection.
  function watchStreamSilence() {
    setInterval(() => {
      if (source?.readyState === EventSource.OPEN && Date.now() - state.lastStreamMessage > 30000) {
        state.streamDown = true;
        updateBanner();
        restartStream(0);
      }
    }, 2000);
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
      if (!state.apiOk || state.streamDown) quietly(loadHealth());
    }, 3000);
    setInterval(() => {
      quietly(loadLate());
      quietly(loadDead());
    }, 30000);
  }

  function start() {
    $('top-n').textContent = String(TOP_N);
    wireControls();
    watchChartWidth();
    connectStream();
    watchStreamSilence();
    startTimers();
    reloadSnapshots();
  }

  start();
})();
