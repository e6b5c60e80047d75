// Formatting of numbers, times and durations. Pure (Intl only): node can import it.

import { DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS } from './constants.js';

const numberFormat = new Intl.NumberFormat();

/** A count with the reader's digit grouping; an em dash when unknown. */
export function fmtInt(n) {
  return n == null ? '—' : numberFormat.format(n);
}

/** Events per minute, one decimal. */
export function fmtRate(perMin) {
  return perMin == null ? '—' : `${perMin.toFixed(1)}/min`;
}

// Formatters are costly to make; a busy feed formats hundreds of times a second.
const hmOptions = { hour: '2-digit', minute: '2-digit', hour12: false };
const clockFormat = new Intl.DateTimeFormat([], { ...hmOptions, second: '2-digit' });
const hmFormat = new Intl.DateTimeFormat([], hmOptions);
const dayTimeFormat = new Intl.DateTimeFormat([], { day: 'numeric', month: 'short', ...hmOptions });

/** Local time of day with seconds, e.g. 14:05:09. */
export function fmtClock(ms) {
  return clockFormat.format(ms);
}

/** Local time of day, e.g. 14:05. */
export function fmtHm(ms) {
  return hmFormat.format(ms);
}

/** Local day and time, e.g. 4 Nov, 14:05 (for the history, whose ranges span days). */
export function fmtDayTime(ms) {
  return dayTimeFormat.format(ms);
}

/** A duration for people: 42 s, 3 min 05 s, 2 h 07 min; negative ones are "ahead". */
export function fmtDuration(ms) {
  if (ms == null || !Number.isFinite(ms)) return '—';
  const s = Math.round(Math.abs(ms) / 1000);
  const text = s < 60 ? `${s} s` : s < 3600 ? `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`
    : `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')} min`;
  return ms < 0 ? `${text} ahead` : text;
}

const UNITS = [[DAY_MS, 'day'], [HOUR_MS, 'hour'], [MINUTE_MS, 'minute'], [SECOND_MS, 'second']];

// A positive length as a whole number of the largest unit that divides it: 90 s is 90 seconds
// (not 1.5 minutes), 2 h is 2 hours, 36 h is 36 hours.
function wholeUnits(ms) {
  for (const [size, unit] of UNITS) {
    if (ms % size === 0) return { n: ms / size, unit };
  }
  return { n: ms, unit: 'millisecond' };
}

/** A window's length as an adjective: "5-minute", "1-hour", "90-second". */
export function spanLabel(ms) {
  if (!(ms > 0) || !Number.isFinite(ms)) return '—';
  const { n, unit } = wholeUnits(ms);
  return `${n}-${unit}`;
}

/** A length as a noun after "last": "hour", "12 hours", "84 minutes". */
export function durationText(ms) {
  if (!(ms > 0) || !Number.isFinite(ms)) return '—';
  const { n, unit } = wholeUnits(ms);
  return n === 1 ? unit : `${n} ${unit}s`;
}

/** A length in minutes, at most three decimals: 5, 60, 0.5. */
export function minutesText(ms) {
  return String(Number((ms / MINUTE_MS).toFixed(3)));
}

/** An instant as RFC 3339 in UTC, without milliseconds when they are zero. */
export function isoSeconds(ms) {
  return new Date(ms).toISOString().replace('.000Z', 'Z');
}
