// The ingest panel: rates between two reads of /ingest, their order, the cut, the notes, the cells.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  baselineOf, busiestFirst, fmtPerSecond, ingestCells, ingestView, keyRate, loadIngest, MAX_KEYS,
  NEED_READ_KEY_NOTE, NO_KEYS_NOTE,
} from '../../src/api/dashboard/ingest.js';

const SINCE = '2026-12-04T21:00:00Z';
const T0 = Date.parse('2026-12-04T22:00:00Z');

const key = (name, accepted, extra = {}) => ({ key: name, accepted, rejected: 0, throttled: 0, ...extra });
const body = (keys, since = SINCE) => ({ since, keys });

/** A getJson standing in for the API: answers /ingest with `answer` (a body, or an error to throw). */
function fakeApi(answer) {
  const paths = [];
  const getJson = async (path) => {
    paths.push(path);
    if (answer instanceof Error) throw answer;
    return answer;
  };
  return { getJson, paths };
}

const httpError = (status, message) => Object.assign(new Error(message), { status });

test('keyRate: none on the first read, the difference over the seconds between reads after', () => {
  const entry = key('feed', 1500);
  assert.equal(keyRate(entry, SINCE, null, T0), null, 'the first read has nothing to measure from');
  const previous = baselineOf(body([key('feed', 1000)]), T0 - 5000);
  assert.equal(keyRate(entry, SINCE, previous, T0), 100, '500 events in 5 s');
  assert.equal(keyRate(key('feed', 1000), SINCE, previous, T0), 0, 'nothing new: 0, not unknown');
  assert.equal(keyRate(key('new', 10), SINCE, previous, T0), null, 'a key not read before');
  assert.equal(keyRate(entry, SINCE, previous, T0 - 5000), null, 'no time between the reads');
});

test('keyRate: counters that restarted reset the baseline, never a negative rate', () => {
  const previous = baselineOf(body([key('feed', 1000), key('other', 5)]), T0 - 5000);
  assert.equal(keyRate(key('feed', 40), SINCE, previous, T0), null, 'a count that went down');
  assert.equal(keyRate(key('other', 900), '2026-12-04T21:59:58Z', previous, T0), null,
    'another `since`: the process restarted, even if the count went up');

  const first = ingestView(body([key('feed', 1000)]), null, T0 - 5000);
  const restarted = ingestView(body([key('feed', 40)], '2026-12-04T21:59:58Z'), first.baseline, T0);
  assert.equal(restarted.rows[0].rate, null);
  assert.equal(restarted.baseline.accepted.get('feed'), 40, 'the new count is the baseline');
  const next = ingestView(body([key('feed', 90)], '2026-12-04T21:59:58Z'), restarted.baseline, T0 + 5000);
  assert.equal(next.rows[0].rate, 10, 'measured from the reset: 50 events in 5 s');
});

test('ingestView: rows keep every count, the baseline every key; a first read shows "—"', () => {
  const view = ingestView(body([key('a', 10, { rejected: 2, throttled: 1 }), key('b', 3)]), null, T0);
  assert.equal(view.note, null);
  assert.equal(view.since, SINCE);
  assert.deepEqual(view.rows, [
    { key: 'a', accepted: 10, rejected: 2, throttled: 1, rate: null },
    { key: 'b', accepted: 3, rejected: 0, throttled: 0, rate: null },
  ]);
  assert.deepEqual(view.baseline, { since: SINCE, atMs: T0, accepted: new Map([['a', 10], ['b', 3]]) });
  assert.equal(ingestCells(view.rows[0])[1].text, '—');
});

test('ingestView: busiest first, then by name; unknown rates last', () => {
  const previous = baselineOf(body([key('a', 0), key('b', 0), key('c', 0), key('d', 0)]), T0 - 2000);
  const view = ingestView(body([key('a', 10), key('b', 40), key('c', 10), key('d', 0), key('e', 99)]), previous, T0);
  assert.deepEqual(view.rows.map((r) => [r.key, r.rate]),
    [['b', 20], ['a', 5], ['c', 5], ['d', 0], ['e', null]]);
  assert.equal(busiestFirst({ key: 'x', rate: 1 }, { key: 'y', rate: 1 }), -1);
  assert.equal(busiestFirst({ key: 'y', rate: null }, { key: 'x', rate: null }), 1);
});

test('ingestView: at most MAX_KEYS rows, the busiest, and the note says so', () => {
  const names = Array.from({ length: 120 }, (_, i) => `k${String(i).padStart(3, '0')}`);
  const previous = baselineOf(body(names.map((n) => key(n, 0))), T0 - 1000);
  // k000 is the slowest, k119 the busiest.
  const view = ingestView(body(names.map((n, i) => key(n, i))), previous, T0);
  assert.equal(MAX_KEYS, 50);
  assert.equal(view.rows.length, 50);
  assert.equal(view.rows[0].key, 'k119');
  assert.equal(view.rows[49].key, 'k070');
  assert.equal(view.note, 'The 50 busiest of 120 keys.');
  assert.equal(view.baseline.accepted.size, 120, 'keys not shown keep a baseline too');

  const exactly = ingestView(body(names.slice(0, 50).map((n) => key(n, 1))), null, T0);
  assert.equal(exactly.rows.length, 50);
  assert.equal(exactly.note, null, '50 keys: nothing cut');
});

test('loadIngest: no keys is the note, with no rows', async () => {
  const api = fakeApi(body([]));
  const view = await loadIngest(api.getJson, null, () => T0);
  assert.deepEqual(api.paths, ['/ingest']);
  assert.deepEqual(view.rows, []);
  assert.equal(view.note, NO_KEYS_NOTE);
  assert.equal(NO_KEYS_NOTE, 'No events over HTTP yet: see docs/INGEST.md.');
});

test('loadIngest: the rate over the client clock read when the answer came', async () => {
  const previous = baselineOf(body([key('feed', 100)]), T0 - 4000);
  const view = await loadIngest(fakeApi(body([key('feed', 300)])).getJson, previous, () => T0);
  assert.equal(view.rows[0].rate, 50);
  assert.equal(view.baseline.atMs, T0);
});

test('loadIngest: 401 and 403 are the read-key note, with no rows and no baseline', async () => {
  for (const status of [401, 403]) {
    const api = fakeApi(httpError(status, 'a read key is required'));
    const view = await loadIngest(api.getJson, baselineOf(body([key('feed', 1)]), T0 - 5000), () => T0);
    assert.deepEqual(view, { rows: [], note: NEED_READ_KEY_NOTE, since: null, baseline: null });
  }
  assert.equal(NEED_READ_KEY_NOTE, 'Ingest counts need a read key (--require-auth).');
});

test('loadIngest: another error answer is a note; no answer at all is thrown', async () => {
  const view = await loadIngest(fakeApi(httpError(503, 'the key store does not answer')).getJson, null);
  assert.deepEqual(view.rows, []);
  assert.equal(view.note, 'Ingest counts unavailable: the key store does not answer.');
  await assert.rejects(loadIngest(fakeApi(new TypeError('Failed to fetch')).getJson, null), TypeError);
});

test('ingestCells: key, events/s, accepted, rejected, throttled; the key as given', () => {
  const cells = ingestCells({ key: '<img src=x onerror=alert(1)>', accepted: 1234567, rejected: 5, throttled: 2, rate: 12.345 });
  assert.equal(cells.length, 5, 'Key, Events/s, Accepted, Rejected, Throttled');
  assert.deepEqual(cells[0], { text: '<img src=x onerror=alert(1)>', className: 'ingest-key' });
  assert.equal(cells[1].text, fmtPerSecond(12.345));
  assert.match(cells[1].text, /^12[.,]3$/);
  assert.equal(cells[2].text, new Intl.NumberFormat().format(1234567));
  assert.equal(cells[3].text, '5');
  assert.equal(cells[4].text, '2');
  assert.ok(cells.slice(1).every((c) => c.className === 'num'));
  assert.equal(fmtPerSecond(null), '—');
  assert.match(fmtPerSecond(0), /^0[.,]0$/);
});
