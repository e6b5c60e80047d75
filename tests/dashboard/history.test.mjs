// The history view's rules: resolutions read, range -> resolution, the request, bucket filling,
// series and the note.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  alertCount, chartData, chooseResolution, coverage, DEFAULT_RANGE, fillBuckets, historyPath, keptFromOf,
  MAX_WINDOWS, parseResolutions, rangeBounds, rangeByKey, RANGES, resolutionNote, totals,
} from '../../src/api/dashboard/history.js';

const M = 60000;
const H = 60 * M;
const D = 24 * H;
const NOW = Date.UTC(2026, 10, 25, 10, 12, 41); // 10:12:41 UTC
const iso = (ms) => new Date(ms).toISOString().replace('.000Z', 'Z');
const range = (key) => RANGES.find((r) => r.key === key).ms;

// The server's default: 5m kept 30 d, 1h kept 400 d, 1d kept 5 y; kept_from = now - retention,
// floored to the window (as the Rust side computes it).
function resolutionsBody(base = { name: '5m', span: 5 * M, retention: 30 * D }, now = NOW) {
  const all = [base, { name: '1h', span: H, retention: 400 * D }, { name: '1d', span: D, retention: 5 * 365 * D }]
    .filter((r, i) => i === 0 || (r.span > base.span && r.span % base.span === 0));
  return {
    resolutions: all.map((r) => ({
      name: r.name,
      span_seconds: r.span / 1000,
      retention_seconds: r.retention / 1000,
      kept_from: iso(Math.floor((now - r.retention) / r.span) * r.span),
    })),
  };
}

test('the picker offers 6 h, 24 h, 7 d, 30 d and 1 y, shortest first', () => {
  assert.deepEqual(RANGES.map((r) => r.label), ['6 h', '24 h', '7 d', '30 d', '1 y']);
  assert.deepEqual(RANGES.map((r) => r.ms), [6 * H, 24 * H, 7 * D, 30 * D, 365 * D]);
  assert.equal(rangeByKey('7d').ms, 7 * D);
  assert.equal(rangeByKey('nonsense').key, DEFAULT_RANGE);
});

test('parseResolutions reads spans and kept_from, finest first', () => {
  const list = parseResolutions(resolutionsBody());
  assert.deepEqual(list.map((r) => [r.name, r.spanMs]), [['5m', 5 * M], ['1h', H], ['1d', D]]);
  assert.equal(list[0].retentionMs, 30 * D);
  assert.equal(list[0].keptFromMs, Date.UTC(2026, 9, 26, 10, 10));
  // Listed out of order: sorted anyway, so the first is the base (finest).
  const shuffled = { resolutions: [...resolutionsBody().resolutions].reverse() };
  assert.equal(parseResolutions(shuffled)[0].name, '5m');
  // A window of 1.5 s is 1500 ms; a null kept_from is "nothing kept".
  const odd = parseResolutions({ resolutions: [{ name: '1500ms', span_seconds: 1.5, retention_seconds: 60, kept_from: null }] });
  assert.equal(odd[0].spanMs, 1500);
  assert.equal(odd[0].keptFromMs, null);
});

test('parseResolutions refuses what it cannot read, rather than guess a window', () => {
  assert.throws(() => parseResolutions(null));
  assert.throws(() => parseResolutions({}));
  assert.throws(() => parseResolutions({ resolutions: [] }));
  assert.throws(() => parseResolutions({ resolutions: [{ name: '5m', span_seconds: 0 }] }));
  assert.throws(() => parseResolutions({ resolutions: [{ name: '5m', span_seconds: 'five' }] }));
  assert.throws(() => parseResolutions({ resolutions: [{ span_seconds: 300 }] }));
});

test('rangeBounds: whole windows, ending with the one now filling', () => {
  const b = rangeBounds(5 * M, 6 * H, NOW);
  assert.equal(b.to, Date.UTC(2026, 10, 25, 10, 15), 'the end of the 10:10 window');
  assert.equal(b.count, 72);
  assert.equal(b.from, b.to - 72 * 5 * M);
  const day = rangeBounds(D, 365 * D, NOW);
  assert.equal(day.to, Date.UTC(2026, 10, 26), 'days end at midnight UTC');
  assert.equal(day.count, 365);
  // A range not a multiple of the window: rounded up to whole windows.
  assert.equal(rangeBounds(7 * M, H, NOW).count, 9);
});

test('coverage: the share of the range at or after kept_from', () => {
  assert.equal(coverage(0, 100, 200), 1);
  assert.equal(coverage(150, 100, 200), 0.5);
  assert.equal(coverage(250, 100, 200), 0);
  assert.equal(coverage(null, 100, 200), 0, 'nothing kept');
});

test('chooseResolution with 5-minute windows: 5m up to 24 h, 1h for 7 d and 30 d, 1d for a year', () => {
  const list = parseResolutions(resolutionsBody());
  const pick = (key) => chooseResolution(list, range(key), NOW);
  assert.equal(pick('6h').resolution.name, '5m');
  assert.equal(pick('6h').count, 72);
  assert.equal(pick('24h').resolution.name, '5m');
  assert.equal(pick('24h').count, 288);
  assert.equal(pick('7d').resolution.name, '1h', '2 016 five-minute windows are too many');
  assert.equal(pick('7d').count, 168);
  assert.equal(pick('30d').resolution.name, '1h');
  assert.equal(pick('30d').count, 720);
  assert.equal(pick('1y').resolution.name, '1d', '8 760 hours are too many');
  assert.equal(pick('1y').count, 365);
  for (const r of RANGES) {
    const c = chooseResolution(list, r.ms, NOW);
    assert.ok(c.count <= MAX_WINDOWS, `${r.key}: ${c.count} windows`);
    assert.equal(c.cut, false);
    assert.equal(c.to - c.from, c.count * c.resolution.spanMs);
  }
});

test('chooseResolution with 1-minute windows: 1m for 6 h, then the hour', () => {
  const list = parseResolutions(resolutionsBody({ name: '1m', span: M, retention: 30 * D }));
  assert.equal(chooseResolution(list, 6 * H, NOW).resolution.name, '1m');
  assert.equal(chooseResolution(list, 6 * H, NOW).count, 360);
  assert.equal(chooseResolution(list, 24 * H, NOW).resolution.name, '1h', '1 440 one-minute windows are too many');
});

test('chooseResolution skips a resolution whose kept data covers less than most of the range', () => {
  // The base window kept only 3 hours: 24 h would fit in 288 five-minute windows, but 21 of its
  // hours are gone at that resolution: the hour shows them all.
  const body = resolutionsBody({ name: '5m', span: 5 * M, retention: 3 * H });
  const list = parseResolutions(body);
  // kept_from is floored to the window (07:10): just over half of the last 6 hours.
  assert.equal(chooseResolution(list, 6 * H, NOW).resolution.name, '5m');
  assert.equal(chooseResolution(list, 7 * H, NOW).resolution.name, '1h', '3 of 7 hours is not most');
  const day = chooseResolution(list, 24 * H, NOW);
  assert.equal(day.resolution.name, '1h');
  assert.equal(day.coverage, 1);
  // 2 hours: still the base window.
  assert.equal(chooseResolution(list, 2 * H, NOW).resolution.name, '5m');
});

test('chooseResolution: "most" means more than half', () => {
  const body = resolutionsBody();
  // 1h kept from 10 days before now: covers about 10/30 of 30 d.
  body.resolutions[1].kept_from = iso(NOW - 10 * D);
  let list = parseResolutions(body);
  assert.equal(chooseResolution(list, 30 * D, NOW).resolution.name, '1d');
  // Kept from 20 days before: about two thirds: the hour is fine.
  body.resolutions[1].kept_from = iso(NOW - 20 * D);
  list = parseResolutions(body);
  const c = chooseResolution(list, 30 * D, NOW);
  assert.ok(c.coverage > 0.5 && c.coverage < 0.7, `coverage ${c.coverage}`);
  assert.equal(c.resolution.name, '1h');
});

test('chooseResolution: when none covers most of the range, the one covering most (the finest of equals)', () => {
  // Retentions shorter than the defaults: 5m kept 3 h, 1h kept 12 h, 1d kept 10 days.
  const body = resolutionsBody({ name: '5m', span: 5 * M, retention: 3 * H });
  const kept = { '1h': NOW - 12 * H, '1d': NOW - 10 * D };
  for (const r of body.resolutions) if (kept[r.name]) r.kept_from = iso(kept[r.name]);
  let list = parseResolutions(body);
  // 30 d: the base window has too many; the hour covers 12 h of it, the day 10 days: the day.
  assert.equal(chooseResolution(list, 30 * D, NOW).resolution.name, '1d');
  // 24 h: the hour covers half (not most), the day all of it: the day.
  assert.equal(chooseResolution(list, 24 * H, NOW).resolution.name, '1d');
  // 12 h: the hour, kept from exactly 12 h ago, covers all of it.
  assert.equal(chooseResolution(list, 12 * H, NOW).resolution.name, '1h');
  // A year: only the day fits (8 760 hours), though it covers 10 days of it.
  const year = chooseResolution(list, 365 * D, NOW);
  assert.equal(year.resolution.name, '1d');
  assert.ok(Math.abs(year.coverage - 10 / 365) < 1e-9, `coverage ${year.coverage}`);
  // Every resolution kept from the same instant: the finest.
  for (const r of body.resolutions) r.kept_from = iso(NOW - 2 * H);
  list = parseResolutions(body);
  assert.equal(chooseResolution(list, 24 * H, NOW).resolution.name, '5m');
  // Nothing kept anywhere: the finest that fits.
  const none = parseResolutions({ resolutions: body.resolutions.map((r) => ({ ...r, kept_from: null })) });
  assert.equal(chooseResolution(none, 7 * D, NOW).resolution.name, '1h');
});

test('chooseResolution measures coverage up to now, not to the end of a coarse window', () => {
  // The day's window of today ends at midnight; kept from 08:12 today covers 2 of the last
  // 24 hours, not 16 of the 24 in [00:00, 24:00).
  const body = resolutionsBody();
  body.resolutions[2].kept_from = iso(NOW - 2 * H);
  const [, , day] = parseResolutions(body);
  const c = chooseResolution([day], 24 * H, NOW);
  assert.ok(Math.abs(c.coverage - 2 / 24) < 1e-9, `coverage ${c.coverage}`);
});

test('chooseResolution: when even the coarsest has too many windows, its newest 1 000', () => {
  // A 7-minute window divides neither the hour nor the day: the server lists it alone.
  const list = parseResolutions(resolutionsBody({ name: '7m', span: 7 * M, retention: 30 * D }));
  assert.equal(list.length, 1);
  const week = chooseResolution(list, 7 * D, NOW);
  assert.equal(week.cut, true);
  assert.equal(week.count, MAX_WINDOWS);
  assert.equal(week.to - week.from, MAX_WINDOWS * 7 * M);
  assert.equal(week.coverage, 1);
  assert.equal(chooseResolution(list, 6 * H, NOW).cut, false);
});

test('historyPath: one type, the resolution, from and to in RFC 3339, a full page', () => {
  const list = parseResolutions(resolutionsBody());
  const choice = chooseResolution(list, 7 * D, NOW);
  const path = historyPath('San José', 'traffic', choice);
  const url = new URL(path, 'http://x');
  assert.equal(url.pathname, '/aggregations');
  const p = url.searchParams;
  assert.equal(p.get('city'), 'San José');
  assert.equal(p.get('event_type'), 'traffic');
  assert.equal(p.get('resolution'), '1h');
  assert.equal(p.get('from'), '2026-11-18T11:00:00Z');
  assert.equal(p.get('to'), '2026-11-25T11:00:00Z');
  assert.equal(p.get('limit'), '1000');
  assert.equal(p.get('fields'), 'window_start,event_count,severity_counts');
  assert.equal(p.get('cursor'), null);
  assert.equal(new URL(historyPath('SF', 'weather', choice, 'abc=='), 'http://x').searchParams.get('cursor'), 'abc==');
});

function item(start, count, sev = {}) {
  return { window_start: iso(start), window_end: iso(start + H), event_count: count, severity_counts: sev };
}

test('fillBuckets: counts where sent, 0 where kept but empty, null before kept_from', () => {
  const from = Date.UTC(2026, 10, 25, 0);
  const to = from + 6 * H;
  const keptFromMs = from + 2 * H;
  const windows = [ // newest first, as the API sends them
    item(from + 5 * H, 4, { low: 1, high: 2, critical: 1 }),
    item(from + 3 * H, 2, { medium: 2 }),
    item(from + 1 * H, 7, { critical: 7 }), // before kept_from, but sent: shown
  ];
  const f = fillBuckets(windows, { from, to, spanMs: H, keptFromMs });
  assert.deepEqual(f.starts, [0, 1, 2, 3, 4, 5].map((i) => from + i * H));
  assert.deepEqual(f.events, [null, 7, 0, 2, 0, 4]);
  assert.deepEqual(f.alerts, [null, 7, 0, 0, 0, 3]);
});

test('fillBuckets ignores windows outside the range or off the grid; a repeat keeps the larger count', () => {
  const from = Date.UTC(2026, 10, 25, 0);
  const to = from + 3 * H;
  const windows = [
    item(to, 99), // starts at `to`: excluded
    item(from - H, 99),
    item(from + 30 * M, 99), // not a window start of this resolution
    item(from + H, 3, { high: 1 }),
    item(from + H, 5, { high: 2 }), // the same window, counted further (pages read apart)
    item(from + H, 4, { high: 2 }),
  ];
  const f = fillBuckets(windows, { from, to, spanMs: H, keptFromMs: from });
  assert.deepEqual(f.events, [0, 5, 0]);
  assert.deepEqual(f.alerts, [0, 2, 0]);
});

test('fillBuckets with nothing kept plots nothing', () => {
  const from = Date.UTC(2026, 10, 25, 0);
  const f = fillBuckets([], { from, to: from + 2 * H, spanMs: H, keptFromMs: null });
  assert.deepEqual(f.events, [null, null]);
  assert.deepEqual(totals(f), { events: 0, alerts: 0, points: 0 });
});

test('chartData and totals: x in seconds, then events and alerts', () => {
  const from = Date.UTC(2026, 10, 25, 0);
  const f = fillBuckets([item(from, 3, { critical: 1, low: 2 }), item(from + 2 * H, 1, { high: 1 })],
    { from, to: from + 3 * H, spanMs: H, keptFromMs: from - D });
  assert.deepEqual(chartData(f), [[from / 1000, from / 1000 + 3600, from / 1000 + 7200], [3, 0, 1], [1, 0, 1]]);
  assert.deepEqual(totals(f), { events: 4, alerts: 2, points: 3 });
});

test('alertCount: high plus critical, zeros left out by the API', () => {
  assert.equal(alertCount({ low: 5, medium: 1, high: 2, critical: 3 }), 5);
  assert.equal(alertCount({ low: 5 }), 0);
  assert.equal(alertCount(undefined), 0);
});

test('keptFromOf: the answer\'s kept_from when it has one, else the resolution\'s', () => {
  const [r] = parseResolutions(resolutionsBody());
  assert.equal(keptFromOf({ kept_from: '2026-11-01T00:00:00Z' }, r), Date.UTC(2026, 10, 1));
  assert.equal(keptFromOf({ kept_from: null }, r), r.keptFromMs);
  assert.equal(keptFromOf({}, r), r.keptFromMs);
});

test('resolutionNote names the resolution, and kept_from only when the range reaches before it', () => {
  const list = parseResolutions(resolutionsBody());
  const fmt = (ms) => iso(ms);
  const day = chooseResolution(list, 24 * H, NOW);
  const note = resolutionNote(day, day.resolution.keptFromMs, fmt);
  assert.match(note, /5-minute windows \(5m\), 288 of them\./);
  assert.doesNotMatch(note, /kept from/);
  const kept = NOW - 3 * D;
  const week = chooseResolution(list, 7 * D, NOW);
  const partial = resolutionNote(week, kept, fmt);
  assert.match(partial, /1-hour windows \(1h\), 168 of them\./);
  assert.ok(partial.includes(`kept from ${iso(kept)}`), partial);
  assert.match(resolutionNote(week, null, fmt), /No data is kept at this resolution yet/);
  const seven = parseResolutions(resolutionsBody({ name: '7m', span: 7 * M, retention: 30 * D }));
  assert.match(resolutionNote(chooseResolution(seven, 30 * D, NOW), NOW - 30 * D, fmt), /only the newest 1.000 are shown/);
});
