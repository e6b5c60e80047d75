// Window math and the rules for merging window counts. Pure: node can import it.
//
// Windows are tumbling and aligned on the epoch: a window of length `span` starts at a multiple
// of `span` (as the engine's EventTime::window_start computes it). The length is the server's
// `--window`, read from /api/v1/resolutions; nothing here assumes 5 minutes.
//
// A city's windows are kept in a Map from `type|startMs` to {count, sev}. The event types are
// the server's (`--event-types`); the functions that go over them take the list.

import { HOUR_MS, SEVERITIES } from './constants.js';

/** The live chart shows at least this many windows (for windows of an hour or more)… */
export const MIN_CHART_WINDOWS = 12;
/** …and at most this many (for windows shorter than 10 s). */
export const MAX_CHART_WINDOWS = 360;

/** The start of the window of length `spanMs` holding the instant `ms`. */
export function windowStartOf(ms, spanMs) {
  return Math.floor(ms / spanMs) * spanMs;
}

/**
 * How many windows the live chart shows: an hour of them, but at least 12 points (with windows
 * of an hour or more, an hour would be a dot) and at most 360 (tiny windows would make thousands).
 */
export function chartWindowCount(spanMs) {
  return Math.min(MAX_CHART_WINDOWS, Math.max(MIN_CHART_WINDOWS, Math.ceil(HOUR_MS / spanMs)));
}

/** The starts of the last `count` windows, oldest first, ending with the one filling at `nowMs`. */
export function windowStarts(nowMs, spanMs, count) {
  const cur = windowStartOf(nowMs, spanMs);
  return Array.from({ length: count }, (_, i) => cur - (count - 1 - i) * spanMs);
}

/**
 * How many windows to ask /aggregations for (all types, newest first) to fill `count` windows of
 * each of `typeCount` types. The margin covers the window before the first and windows ahead of
 * the clock (events may be stamped a little in the future), which come first in the answer.
 */
export function windowsLimit(count, typeCount) {
  return (count + 3) * typeCount;
}

export function windowKey(type, startMs) {
  return `${type}|${startMs}`;
}

/**
 * Merges one window (a REST item or a stream `window` message) into `byKey`; returns whether
 * anything changed. Ignored: windows starting before `oldestMs`, and, when `spanMs` is given,
 * windows whose `window_end` says they are of another length (another resolution). A window
 * only grows (it is the sum of its events), and a REST answer may be older than a stream update
 * that overtook it: whichever has counted more is kept.
 */
export function mergeWindow(byKey, w, { oldestMs = -Infinity, spanMs = null } = {}) {
  const start = Date.parse(w.window_start);
  if (!Number.isFinite(start) || start < oldestMs) return false;
  if (spanMs != null && w.window_end != null && Date.parse(w.window_end) - start !== spanMs) return false;
  const key = windowKey(w.event_type, start);
  const old = byKey.get(key);
  if (old && old.count >= w.event_count) return false;
  byKey.set(key, { count: w.event_count, sev: { ...w.severity_counts } });
  return true;
}

/** Drops the windows that start before `oldestMs`. */
export function pruneWindows(byKey, oldestMs) {
  for (const key of [...byKey.keys()]) {
    if (Number(key.slice(key.lastIndexOf('|') + 1)) < oldestMs) byKey.delete(key);
  }
}

/** One type's window of a city, or null when none was counted. */
export function windowAt(byKey, type, startMs) {
  return byKey?.get(windowKey(type, startMs)) ?? null;
}

/**
 * Events per minute of a city in each window: the `types` summed, ÷ the window's length in
 * minutes. All null while the city's windows are not loaded (`byKey` undefined): unknown is not
 * zero.
 */
export function cityRates(byKey, starts, spanMs, types) {
  if (!byKey) return starts.map(() => null);
  const minutes = spanMs / 60000;
  return starts.map((s) => types.reduce((sum, t) => sum + (windowAt(byKey, t, s)?.count ?? 0), 0) / minutes);
}

/** A city's window over the `types`: its count and its severity counts (zeros included). */
export function windowTotal(byKey, startMs, types) {
  const total = { count: 0, sev: Object.fromEntries(SEVERITIES.map((s) => [s, 0])) };
  for (const t of types) {
    const w = windowAt(byKey, t, startMs);
    if (!w) continue;
    total.count += w.count;
    for (const s of SEVERITIES) total.sev[s] += w.sev[s] ?? 0;
  }
  return total;
}

/**
 * The largest count of one of the `types` in the given windows of the given cities, at least 1
 * (for shading).
 */
export function largestCount(windowsByCity, cities, starts, types) {
  let max = 1;
  for (const city of cities) {
    const byKey = windowsByCity.get(city);
    for (const t of types) {
      for (const s of starts) max = Math.max(max, windowAt(byKey, t, s)?.count ?? 0);
    }
  }
  return max;
}
