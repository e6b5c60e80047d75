// Formatting: durations, window lengths, rates, RFC 3339 instants.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  durationText, fmtDuration, fmtHm, fmtInt, fmtRate, isoSeconds, minutesText, spanLabel,
} from '../../src/api/dashboard/format.js';

const S = 1000;
const M = 60 * S;
const H = 60 * M;
const D = 24 * H;

test('fmtDuration: seconds, then minutes and seconds, then hours and minutes; negative is ahead', () => {
  assert.equal(fmtDuration(0), '0 s');
  assert.equal(fmtDuration(59 * S), '59 s');
  assert.equal(fmtDuration(59.6 * S), '1 min 00 s', 'rounded to the second before choosing the unit');
  assert.equal(fmtDuration(3 * M + 5 * S), '3 min 05 s');
  assert.equal(fmtDuration(H - S), '59 min 59 s');
  assert.equal(fmtDuration(2 * H + 7 * M + 30 * S), '2 h 07 min');
  assert.equal(fmtDuration(-42 * S), '42 s ahead');
  assert.equal(fmtDuration(null), '—');
  assert.equal(fmtDuration(NaN), '—');
  assert.equal(fmtDuration(Infinity), '—');
});

test('spanLabel names a window by the largest unit that divides it', () => {
  assert.equal(spanLabel(5 * M), '5-minute');
  assert.equal(spanLabel(M), '1-minute');
  assert.equal(spanLabel(H), '1-hour');
  assert.equal(spanLabel(D), '1-day');
  assert.equal(spanLabel(90 * S), '90-second', '90 s is not a whole number of minutes');
  assert.equal(spanLabel(36 * H), '36-hour');
  assert.equal(spanLabel(7 * M), '7-minute');
  assert.equal(spanLabel(1500), '1500-millisecond');
  assert.equal(spanLabel(0), '—');
  assert.equal(spanLabel(null), '—');
});

test('durationText: singular without a number, plural with one', () => {
  assert.equal(durationText(H), 'hour');
  assert.equal(durationText(12 * H), '12 hours');
  assert.equal(durationText(84 * M), '84 minutes');
  assert.equal(durationText(12 * D), '12 days');
  assert.equal(durationText(30 * S), '30 seconds');
  assert.equal(durationText(-H), '—');
});

test('minutesText: a window length in minutes, as the chart divides by it', () => {
  assert.equal(minutesText(5 * M), '5');
  assert.equal(minutesText(H), '60');
  assert.equal(minutesText(30 * S), '0.5');
  assert.equal(minutesText(7 * S), '0.117');
});

test('fmtRate: one decimal per minute', () => {
  assert.equal(fmtRate(12), '12.0/min');
  assert.equal(fmtRate(0.25), '0.3/min');
  assert.equal(fmtRate(null), '—');
  assert.equal(fmtRate(undefined), '—');
});

test('fmtInt groups digits but keeps them; unknown is a dash', () => {
  assert.equal(fmtInt(1234567).replace(/\D/g, ''), '1234567');
  assert.equal(fmtInt(0), '0');
  assert.equal(fmtInt(null), '—');
});

test('fmtHm changes with the minute, not within it', () => {
  const t = Date.UTC(2026, 10, 4, 13, 30);
  assert.equal(fmtHm(t), fmtHm(t + 59 * S));
  assert.notEqual(fmtHm(t), fmtHm(t + M));
  assert.match(fmtHm(t), /\d{1,2}\D\d{2}/);
});

test('isoSeconds: RFC 3339 in UTC, milliseconds only when there are some', () => {
  assert.equal(isoSeconds(Date.UTC(2026, 10, 4, 13, 30)), '2026-11-04T13:30:00Z');
  assert.equal(isoSeconds(Date.UTC(2026, 10, 4, 13, 30, 1, 250)), '2026-11-04T13:30:01.250Z');
});
