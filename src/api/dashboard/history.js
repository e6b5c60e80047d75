// The history view's rules: which resolution a range is shown at, which windows it asks for,
// how the answer becomes a chart's series, and what the note under the picker says. Pure:
// nothing here touches the DOM, so node can import it.
//
// The contract (GET /api/v1/resolutions): resolutions finest first, the first being the base
// window (`--window`); `kept_from` is the earliest window start still kept at that resolution.
// GET /api/v1/aggregations?…&resolution=R&from=F&to=T returns the windows whose start is in
// [F, T), newest first, at most `limit` (1..1000) a page.

import { ALERT_SEVERITIES, DAY_MS, HOUR_MS } from './constants.js';
import { fmtDayTime, fmtInt, isoSeconds, spanLabel } from './format.js';
import { windowStartOf } from './windows.js';

/** Most windows one type's chart asks for: one page of /aggregations. */
export const MAX_WINDOWS = 1000;

/** A resolution is good enough for a range when its kept data covers more than this share of it. */
export const COVERAGE_WANTED = 0.5;

/** Pages of one type's windows followed at most (one is expected; this bounds a runaway cursor). */
export const MAX_PAGES = 20;

/** The ranges the picker offers, shortest first. */
export const RANGES = [
  { key: '6h', label: '6 h', ms: 6 * HOUR_MS },
  { key: '24h', label: '24 h', ms: 24 * HOUR_MS },
  { key: '7d', label: '7 d', ms: 7 * DAY_MS },
  { key: '30d', label: '30 d', ms: 30 * DAY_MS },
  { key: '1y', label: '1 y', ms: 365 * DAY_MS },
];
export const DEFAULT_RANGE = '24h';

/** The range with this key, or the default one. */
export function rangeByKey(key) {
  return RANGES.find((r) => r.key === key) ?? RANGES.find((r) => r.key === DEFAULT_RANGE);
}

/**
 * Reads the body of /resolutions into [{name, spanMs, retentionMs, keptFromMs}], finest first.
 * `keptFromMs` is null when nothing is kept at that resolution. Throws when the body does not
 * fit the contract: the page must not guess the window size.
 */
export function parseResolutions(body) {
  const list = body?.resolutions;
  if (!Array.isArray(list) || list.length === 0) throw new Error('the server lists no resolutions');
  return list
    .map((r) => {
      const spanMs = Number(r?.span_seconds) * 1000;
      if (typeof r?.name !== 'string' || !Number.isFinite(spanMs) || spanMs <= 0) {
        throw new Error(`a resolution the page cannot read: ${JSON.stringify(r)}`);
      }
      const kept = r.kept_from == null ? NaN : Date.parse(r.kept_from);
      const retention = Number(r.retention_seconds) * 1000;
      return {
        name: r.name,
        spanMs,
        retentionMs: Number.isFinite(retention) ? retention : null,
        keptFromMs: Number.isFinite(kept) ? kept : null,
      };
    })
    .sort((a, b) => a.spanMs - b.spanMs);
}

/**
 * The windows of length `spanMs` covering the `rangeMs` before `nowMs`: aligned on the windows,
 * ending with the one now filling. `to` is exclusive; `count` windows start in [from, to).
 */
export function rangeBounds(spanMs, rangeMs, nowMs) {
  const to = windowStartOf(nowMs, spanMs) + spanMs;
  const count = Math.max(1, Math.ceil(rangeMs / spanMs));
  return { from: to - count * spanMs, to, count };
}

/**
 * The share (0..1) of [from, to) at or after `keptFromMs`; 0 when nothing is kept (null).
 * chooseResolution measures it over the range asked for, [now - range, now): the windows of a
 * coarse resolution reach past now (a day's window ends at midnight), and that part is not data.
 */
export function coverage(keptFromMs, from, to) {
  if (keptFromMs == null) return 0;
  return Math.min(1, Math.max(0, (to - Math.max(from, keptFromMs)) / (to - from)));
}

/**
 * The resolution a range is shown at: the finest whose windows over the range number at most
 * MAX_WINDOWS (one page per type) and whose kept data covers most (more than half) of the
 * range. When none of those covers most of it (a range reaching before every retention), the
 * one of them covering the most (the finest among equals). When even the coarsest has too many
 * windows, the coarsest, cut to its newest MAX_WINDOWS windows (`cut` is then true).
 *
 * Returns {resolution, from, to, count, coverage, cut}: [from, to) is aligned on the chosen
 * resolution's windows and holds `count` of them.
 */
export function chooseResolution(resolutions, rangeMs, nowMs) {
  const options = resolutions.map((resolution) => {
    const bounds = rangeBounds(resolution.spanMs, rangeMs, nowMs);
    return { resolution, ...bounds, coverage: coverage(resolution.keptFromMs, nowMs - rangeMs, nowMs), cut: false };
  });
  const fitting = options.filter((o) => o.count <= MAX_WINDOWS);
  const covering = fitting.find((o) => o.coverage > COVERAGE_WANTED);
  if (covering) return covering;
  if (fitting.length > 0) {
    return fitting.reduce((best, o) => (o.coverage > best.coverage ? o : best));
  }
  const coarsest = options[options.length - 1];
  const from = coarsest.to - MAX_WINDOWS * coarsest.resolution.spanMs;
  return {
    ...coarsest,
    from,
    count: MAX_WINDOWS,
    coverage: coverage(coarsest.resolution.keptFromMs, Math.max(from, nowMs - rangeMs), nowMs),
    cut: true,
  };
}

/** The fields of a window the charts read: a fifth of a whole window's bytes. */
export const HISTORY_FIELDS = 'window_start,event_count,severity_counts';

/** The /aggregations path for one type's windows over a chosen range (without the /api/v1 prefix). */
export function historyPath(city, type, choice, cursor = null) {
  const params = new URLSearchParams({
    city,
    event_type: type,
    resolution: choice.resolution.name,
    from: isoSeconds(choice.from),
    to: isoSeconds(choice.to),
    limit: String(MAX_WINDOWS),
    fields: HISTORY_FIELDS,
  });
  if (cursor) params.set('cursor', cursor);
  return `/aggregations?${params}`;
}

/** An aggregation's alerts: its high and critical events. */
export function alertCount(severityCounts) {
  return ALERT_SEVERITIES.reduce((sum, s) => sum + (severityCounts?.[s] ?? 0), 0);
}

/**
 * One value per window of [from, to), oldest first: the window's count where the API sent one;
 * 0 where it sent none but the window is kept (no events then); null where the window starts
 * before `keptFromMs`, or nothing is kept (unknown, so not plotted). Windows outside the range
 * or off the grid are ignored; a window sent twice keeps its larger count (windows only grow).
 *
 * Returns {starts, events, alerts}: window starts in ms, events per window, alerts per window.
 */
export function fillBuckets(windows, { from, to, spanMs, keptFromMs }) {
  const byStart = new Map();
  for (const w of windows) {
    const start = Date.parse(w.window_start);
    if (!(start >= from && start < to) || (start - from) % spanMs !== 0) continue;
    const old = byStart.get(start);
    if (!old || w.event_count > old.event_count) byStart.set(start, w);
  }
  const starts = [];
  const events = [];
  const alerts = [];
  for (let s = from; s < to; s += spanMs) {
    const w = byStart.get(s);
    const kept = keptFromMs != null && s >= keptFromMs;
    starts.push(s);
    events.push(w ? w.event_count : kept ? 0 : null);
    alerts.push(w ? alertCount(w.severity_counts) : kept ? 0 : null);
  }
  return { starts, events, alerts };
}

/** uPlot's data for a filled range: x in seconds, then events, then alerts. */
export function chartData(filled) {
  return [filled.starts.map((s) => s / 1000), filled.events, filled.alerts];
}

/** Sums of a filled range: events, alerts, and the windows plotted (not null). */
export function totals(filled) {
  const sum = (list) => list.reduce((a, v) => a + (v ?? 0), 0);
  return { events: sum(filled.events), alerts: sum(filled.alerts), points: filled.events.filter((v) => v != null).length };
}

/**
 * The kept_from that applies to one type's answer: the answer's own when it carries one (it is
 * the fresher), else the resolution's.
 */
export function keptFromOf(body, resolution) {
  const kept = body?.kept_from == null ? NaN : Date.parse(body.kept_from);
  return Number.isFinite(kept) ? kept : resolution.keptFromMs;
}

/**
 * The note under the picker: the resolution shown and, when the range reaches before the kept
 * data, from when data is kept. `keptFromMs` is the kept_from the answers carried (or the
 * resolution's). It names no clock time but kept_from, so that refreshing the same view says the
 * same thing (the note is read out by screen readers when it changes).
 */
export function resolutionNote(choice, keptFromMs, fmtTime = fmtDayTime) {
  const { resolution, count } = choice;
  const parts = [`Shown in ${spanLabel(resolution.spanMs)} windows (${resolution.name}), ${fmtInt(count)} of them.`];
  if (choice.cut) {
    parts.push(`Even at the coarsest resolution the range holds more than ${fmtInt(MAX_WINDOWS)} windows: `
      + `only the newest ${fmtInt(MAX_WINDOWS)} are shown.`);
  }
  if (keptFromMs == null) {
    parts.push('No data is kept at this resolution yet.');
  } else if (keptFromMs > choice.from) {
    parts.push(`Data at this resolution is kept from ${fmtTime(keptFromMs)}; earlier windows are not plotted.`);
  }
  return parts.join(' ');
}
