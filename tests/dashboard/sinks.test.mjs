// The alert delivery panel: a sink's state, what is read for it, and its cells.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  lastError, loadSinks, MAX_SINKS, NO_SINKS_NOTE, sinkCells, sinkState,
} from '../../src/api/dashboard/sinks.js';

const sink = (name, extra = {}) => ({
  name, url: 'http://127.0.0.1:9000', format: 'standard', signed: true, rules: [], ...extra,
});

const delivery = (sinkName, status, extra = {}) => ({
  id: `d-${sinkName}-${status}`, alert_id: 'a1', sink: sinkName, rule: 'severity-high@1', status,
  attempts: 1, created_at: '2026-11-25T10:00:00Z', updated_at: '2026-11-25T10:00:01Z',
  next_attempt_at: null, last_status: 204, last_error: null, alert: {}, ...extra,
});

const list = (...deliveries) => ({ count: deliveries.length, deliveries, next_cursor: null });

/**
 * A getJson standing in for the API: `/rules` gives `sinks`; `/deliveries` answers from
 * `bySink[name]` ({ latest, pending, failed }: deliveries or undefined). Records the paths asked.
 */
function fakeApi(sinks, bySink = {}) {
  const paths = [];
  const getJson = async (path) => {
    paths.push(path);
    if (path === '/rules') return { rules: [], sinks };
    const url = new URL(path, 'http://x');
    assert.equal(url.pathname, '/deliveries');
    assert.equal(url.searchParams.get('limit'), '1');
    const of = bySink[url.searchParams.get('sink')] ?? {};
    const one = of[url.searchParams.get('status') ?? 'latest'];
    return one ? list(one) : list();
  };
  return { getJson, paths };
}

test('sinkState: idle, ok, retrying and failing, by the documented rule', () => {
  assert.equal(sinkState(null, 0, 0), 'idle', 'no delivery yet');
  assert.equal(sinkState(delivery('s', 'delivered'), 0, 0), 'ok');
  assert.equal(sinkState(delivery('s', 'pending', { attempts: 0 }), 1, 0), 'ok', 'waits for its first attempt');
  assert.equal(sinkState(delivery('s', 'pending', { attempts: 2 }), 1, 0), 'retrying');
  assert.equal(sinkState(delivery('s', 'pending', { attempts: 2 }), 0, 0), 'ok',
    'delivered between the two reads: nothing pending is listed any more');
  assert.equal(sinkState(delivery('s', 'delivered', { attempts: 3 }), 1, 0), 'ok',
    'the latest went through, though it took attempts');
  assert.equal(sinkState(delivery('s', 'failed'), 0, 1), 'failing');
  assert.equal(sinkState(delivery('s', 'failed'), 0, 0), 'failing', 'the latest failed');
  assert.equal(sinkState(delivery('s', 'delivered'), 0, 1), 'failing', 'an older failed one is kept');
  assert.equal(sinkState(delivery('s', 'pending', { attempts: 2 }), 1, 1), 'failing', 'failing beats retrying');
  assert.equal(sinkState(null, 0, 1), 'failing', 'reads that disagree still show a failure');
});

test('loadSinks: no sinks is a note, and reads no deliveries', async () => {
  const api = fakeApi([]);
  assert.deepEqual(await loadSinks(api.getJson), { sinks: [], note: NO_SINKS_NOTE });
  assert.deepEqual(api.paths, ['/rules']);
});

test('loadSinks: each sink read three times, its name encoded, its state and errors kept', async () => {
  const failed = delivery('b c', 'failed', { last_status: 500, last_error: 'the sink answered 500' });
  const api = fakeApi([sink('a'), sink('b c', { format: 'slack', signed: false, rules: ['r1'] })], {
    a: { latest: delivery('a', 'delivered') },
    'b c': {
      latest: delivery('b c', 'pending', { attempts: 3, last_error: 'connection refused' }),
      pending: delivery('b c', 'pending', { attempts: 3 }),
      failed,
    },
  });
  const { sinks, note } = await loadSinks(api.getJson);
  assert.equal(note, null);
  assert.deepEqual(sinks.map((s) => [s.sink.name, s.state]), [['a', 'ok'], ['b c', 'failing']]);
  assert.equal(sinks[0].lastFailed, null);
  assert.equal(sinks[1].lastFailed, failed);
  assert.equal(lastError(sinks[0]), '');
  assert.equal(lastError(sinks[1]), 'connection refused', "the latest's error first");
  assert.deepEqual(api.paths.slice(1).sort(), [
    '/deliveries?sink=a&limit=1',
    '/deliveries?sink=a&limit=1&status=failed',
    '/deliveries?sink=a&limit=1&status=pending',
    '/deliveries?sink=b%20c&limit=1',
    '/deliveries?sink=b%20c&limit=1&status=failed',
    '/deliveries?sink=b%20c&limit=1&status=pending',
  ]);
});

test('loadSinks: retrying, idle, and a failure shown from the failed list', async () => {
  const api = fakeApi([sink('r'), sink('i'), sink('f')], {
    r: { latest: delivery('r', 'pending', { attempts: 2 }), pending: delivery('r', 'pending', { attempts: 2 }) },
    f: { latest: delivery('f', 'failed', { last_error: 'the sink answered 410 Gone' }), failed: delivery('f', 'failed') },
  });
  const { sinks } = await loadSinks(api.getJson);
  assert.deepEqual(sinks.map((s) => s.state), ['retrying', 'idle', 'failing']);
  assert.equal(sinks[1].latest, null);
  assert.equal(lastError(sinks[2]), 'the sink answered 410 Gone');
  const older = { latest: delivery('x', 'delivered'), lastFailed: delivery('x', 'failed', { last_error: 'timed out' }) };
  assert.equal(lastError(older), 'timed out', 'no error on the latest: the failed one tells why');
});

test('loadSinks: an error answer from /deliveries (no outbox) is a note, with no rows', async () => {
  const getJson = async (path) => {
    if (path === '/rules') return { rules: [], sinks: [sink('webhook-1')] };
    const err = new Error('this store keeps no outbox');
    err.status = 503;
    throw err;
  };
  const { sinks, note } = await loadSinks(getJson);
  assert.deepEqual(sinks, []);
  assert.equal(note, 'Delivery state unavailable: this store keeps no outbox.');
});

test('loadSinks: no answer at all (the API unreachable) is thrown, for the caller to keep the last view', async () => {
  const getJson = async (path) => {
    if (path === '/rules') return { rules: [], sinks: [sink('webhook-1')] };
    throw new TypeError('Failed to fetch');
  };
  await assert.rejects(loadSinks(getJson), TypeError);
});

test('loadSinks: at most MAX_SINKS sinks are read, and the note says so', async () => {
  const all = Array.from({ length: 40 }, (_, i) => sink(`s${i}`));
  const api = fakeApi(all);
  const { sinks, note } = await loadSinks(api.getJson);
  assert.equal(MAX_SINKS, 32);
  assert.equal(sinks.length, 32);
  assert.equal(api.paths.length, 1 + 3 * 32);
  const read = new Set(api.paths.slice(1).map((p) => new URL(p, 'http://x').searchParams.get('sink')));
  assert.deepEqual([...read].sort(), all.slice(0, 32).map((s) => s.name).sort(), 'the first 32');
  assert.equal(note, 'The first 32 of 40 sinks.');
});

test('sinkCells: the columns in order, "all" rules, the time of the latest, errors cut', () => {
  const now = Date.parse('2026-11-25T12:00:00Z');
  const longError = 'x'.repeat(300);
  const cells = sinkCells({
    sink: sink('webhook-1', { signed: false }),
    latest: delivery('webhook-1', 'failed', { attempts: 4, last_error: longError }),
    lastFailed: null,
    state: 'failing',
  }, now);
  assert.equal(cells.length, 7, 'Sink, Format, Signed, Rules, State, Last delivery, Last error');
  assert.equal(cells[0].text, 'webhook-1');
  assert.equal(cells[0].detail, 'http://127.0.0.1:9000', 'the URL as /rules gives it');
  assert.equal(cells[1].text, 'standard');
  assert.equal(cells[2].text, 'no');
  assert.equal(cells[3].text, 'all', 'no rules listed: every rule');
  assert.deepEqual(cells[4], { text: 'failing', className: 'state state-failing' });
  assert.match(cells[5].text, /^\d\d:\d\d:\d\d$/, 'within a day: the clock time');
  assert.match(cells[5].title, /^failed after 4 attempt\(s\); updated 2026-11-25T10:00:01Z$/);
  assert.equal(cells[6].text, `${'x'.repeat(120)}…`);
  assert.equal(cells[6].title, longError, 'the whole error on hover');

  const idle = sinkCells({ sink: sink('s', { rules: ['r1', 'r2'] }), latest: null, lastFailed: null, state: 'idle' }, now);
  assert.equal(idle[2].text, 'yes');
  assert.equal(idle[3].text, 'r1, r2');
  assert.equal(idle[5].text, '—');
  assert.equal(idle[6].text, '');

  const days = sinkCells({ sink: sink('s'), latest: delivery('s', 'delivered'), lastFailed: null, state: 'ok' },
    now + 3 * 24 * 3600 * 1000);
  assert.doesNotMatch(days[5].text, /^\d\d:\d\d:\d\d$/, 'older than a day: the day too');
});
