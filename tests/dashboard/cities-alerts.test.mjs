// Which cities are shown, and the alert feed's order, dedup, trimming and filtering.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  alertMatches, byTimeDesc, feedAlerts, goesOnTop, rememberAlert, trimAlerts,
} from '../../src/api/dashboard/alerts.js';
import { sameList, topCities, trackedCities } from '../../src/api/dashboard/cities.js';

test('topCities: the busiest N (ties by name), listed by name', () => {
  const cities = [
    { city: 'Boston', total_events: 10 },
    { city: 'Austin', total_events: 50 },
    { city: 'Chicago', total_events: 30 },
    { city: 'Denver', total_events: 30 },
    { city: 'Erie', total_events: 5 },
  ];
  assert.deepEqual(topCities(cities, 3), ['Austin', 'Chicago', 'Denver']);
  assert.deepEqual(topCities(cities, 2), ['Austin', 'Chicago'], 'Chicago beats Denver on the tie, by name');
  assert.deepEqual(topCities(cities, 1), ['Austin']);
  assert.deepEqual(topCities([], 8), []);
  assert.equal(cities[0].city, 'Boston', 'the input is not reordered');
});

test('trackedCities: the top ones, then the added ones not among them, in the order added', () => {
  assert.deepEqual(trackedCities(['A', 'C'], ['Z', 'C', 'B']), ['A', 'C', 'Z', 'B']);
  assert.deepEqual(trackedCities([], ['B']), ['B']);
});

test('sameList compares items and order', () => {
  assert.ok(sameList(['a', 'b'], ['a', 'b']));
  assert.ok(!sameList(['a', 'b'], ['b', 'a']));
  assert.ok(!sameList(['a'], ['a', 'b']));
});

const alert = (id, ts, extra = {}) => ({
  event_id: id, timestamp: ts, city: 'SF', event_type: 'incident', severity: 'high', description: id, ...extra,
});

test('rememberAlert keeps each alert once, with its time parsed', () => {
  const alerts = new Map();
  assert.equal(rememberAlert(alerts, alert('a', '2026-11-25T10:00:00Z')), true);
  assert.equal(rememberAlert(alerts, alert('a', '2026-11-25T10:00:00Z', { description: 'again' })), false);
  assert.equal(alerts.size, 1);
  assert.equal(alerts.get('a').description, 'a', 'the first copy stays');
  assert.equal(alerts.get('a').at, Date.UTC(2026, 10, 25, 10));
});

test('byTimeDesc: newest first, ties by event id descending (the API order)', () => {
  const alerts = new Map();
  for (const [id, ts] of [['b', '10:00:01'], ['a', '10:00:02'], ['c', '10:00:01'], ['d', '09:59:59']]) {
    rememberAlert(alerts, alert(id, `2026-11-25T${ts}Z`));
  }
  const order = [...alerts.values()].sort(byTimeDesc).map((a) => a.event_id);
  assert.deepEqual(order, ['a', 'c', 'b', 'd']);
  const a = alerts.get('a');
  assert.equal(byTimeDesc(a, a), 0);
});

test('trimAlerts keeps the newest, and only once past the slack', () => {
  let alerts = new Map();
  for (let i = 0; i < 15; i++) rememberAlert(alerts, alert(`e${String(i).padStart(2, '0')}`, new Date(Date.UTC(2026, 0, 1) + i * 1000).toISOString()));
  assert.equal(trimAlerts(alerts, 10, 5), alerts, 'at max + slack: not trimmed, same map');
  rememberAlert(alerts, alert('old', '2025-01-01T00:00:00Z'));
  alerts = trimAlerts(alerts, 10, 5);
  assert.equal(alerts.size, 10);
  assert.ok(!alerts.has('old'), 'the oldest go first');
  assert.ok(alerts.has('e14') && alerts.has('e05') && !alerts.has('e04'));
});

test('alertMatches and feedAlerts: the filter, the order and the bound', () => {
  const alerts = new Map();
  rememberAlert(alerts, alert('1', '2026-11-25T10:00:00Z', { city: 'SF', severity: 'high' }));
  rememberAlert(alerts, alert('2', '2026-11-25T10:00:02Z', { city: 'LA', severity: 'critical' }));
  rememberAlert(alerts, alert('3', '2026-11-25T10:00:01Z', { city: 'SF', severity: 'critical' }));
  const ids = (list) => list.map((a) => a.event_id);
  assert.deepEqual(ids(feedAlerts(alerts, { city: '', severity: '' })), ['2', '3', '1']);
  assert.deepEqual(ids(feedAlerts(alerts, { city: 'SF', severity: '' })), ['3', '1']);
  assert.deepEqual(ids(feedAlerts(alerts, { city: '', severity: 'critical' })), ['2', '3']);
  assert.deepEqual(ids(feedAlerts(alerts, { city: 'SF', severity: 'high' })), ['1']);
  assert.deepEqual(ids(feedAlerts(alerts, { city: '', severity: '' }, 2)), ['2', '3']);
  assert.ok(!alertMatches(alerts.get('2'), { city: 'SF', severity: '' }));
});

test('goesOnTop: a live alert is prepended unless it is older than the top (out of order)', () => {
  const alerts = new Map();
  rememberAlert(alerts, alert('m-top', '2026-11-25T10:00:05Z'));
  rememberAlert(alerts, alert('newer', '2026-11-25T10:00:06Z'));
  rememberAlert(alerts, alert('older', '2026-11-25T10:00:01Z'));
  rememberAlert(alerts, alert('a-tie', '2026-11-25T10:00:05Z'));
  rememberAlert(alerts, alert('z-tie', '2026-11-25T10:00:05Z'));
  const top = alerts.get('m-top');
  assert.equal(goesOnTop(alerts.get('newer'), top), true);
  assert.equal(goesOnTop(alerts.get('older'), top), false);
  assert.equal(goesOnTop(alerts.get('z-tie'), top), true, 'same time, larger id than the top: first in the API order');
  assert.equal(goesOnTop(alerts.get('a-tie'), top), false);
  assert.equal(goesOnTop(alerts.get('older'), undefined), true, 'an empty feed');
});
