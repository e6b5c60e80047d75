// The fetch helpers, against a stand-in for fetch.
import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { getAllPages, getJson, onReachability, quietly } from '../../src/api/dashboard/api.js';

let requests;
let reach;
const realFetch = globalThis.fetch;

// Answers by path (after /api/v1): a function of the URL returning [status, body] or throwing.
function serve(routes) {
  globalThis.fetch = async (url, init) => {
    requests.push({ url, accept: init?.headers?.accept, signal: init?.signal });
    const u = new URL(url, 'http://page');
    const route = routes[u.pathname.replace('/api/v1', '')];
    if (!route) return new Response('{"error":"not_found"}', { status: 404 });
    const [status, body] = route(u);
    return new Response(typeof body === 'string' ? body : JSON.stringify(body), { status });
  };
}

beforeEach(() => {
  requests = [];
  reach = [];
  onReachability((ok) => reach.push(ok));
});
afterEach(() => {
  globalThis.fetch = realFetch;
});

test('getJson reads /api/v1 with an accept header and a time-out, and reports reachability', async () => {
  serve({ '/stats': () => [200, { total_events_processed: 3 }] });
  assert.deepEqual(await getJson('/stats'), { total_events_processed: 3 });
  assert.equal(requests[0].url, '/api/v1/stats');
  assert.equal(requests[0].accept, 'application/json');
  assert.ok(requests[0].signal instanceof AbortSignal);
  assert.deepEqual(reach, [true]);
});

test('getJson: an error status throws with the API\'s message and status, yet the API is reachable', async () => {
  serve({ '/aggregations': () => [400, { error: 'bad_request', message: 'resolution must be one of 5m, 1h, 1d', status: 400 }] });
  await assert.rejects(getJson('/aggregations?city=SF&resolution=2h'), (err) => {
    assert.equal(err.message, 'resolution must be one of 5m, 1h, 1d');
    assert.equal(err.status, 400);
    return true;
  });
  await assert.rejects(getJson('/resolutions'), (err) => err.status === 404);
  serve({ '/stats': () => [502, 'not json'] });
  await assert.rejects(getJson('/stats'), /HTTP 502/);
  assert.deepEqual(reach, [true, true, true]);
});

test('getJson returns /health\'s body even on 503 (the store is DOWN)', async () => {
  serve({ '/health': () => [503, { status: 'DOWN' }] });
  assert.deepEqual(await getJson('/health'), { status: 'DOWN' });
  serve({ '/health': () => [503, ''] });
  await assert.rejects(getJson('/health'), /HTTP 503/, 'without a body it is an error');
});

test('getJson: a network failure marks the API unreachable and throws', async () => {
  globalThis.fetch = async () => {
    throw new TypeError('Failed to fetch');
  };
  await assert.rejects(getJson('/stats'), /Failed to fetch/);
  assert.deepEqual(reach, [false]);
});

test('getAllPages follows next_cursor and gathers every page\'s items in order', async () => {
  const pages = {
    '': { cities: [1, 2], next_cursor: 'p2' },
    p2: { cities: [3], next_cursor: 'p3' },
    p3: { cities: [4], next_cursor: null },
  };
  serve({ '/cities': (u) => [200, pages[u.searchParams.get('cursor') ?? '']] });
  assert.deepEqual(await getAllPages('/cities?limit=2', 'cities', 5), [1, 2, 3, 4]);
  assert.deepEqual(requests.map((r) => r.url), [
    '/api/v1/cities?limit=2', '/api/v1/cities?limit=2&cursor=p2', '/api/v1/cities?limit=2&cursor=p3',
  ]);
});

test('getAllPages: the cursor is passed back encoded, and a last page ends the loop', async () => {
  const seen = [];
  serve({
    '/cities': (u) => {
      const cursor = u.searchParams.get('cursor');
      seen.push(cursor);
      return [200, cursor === 'a+b/=' ? { cities: ['y'], next_cursor: null } : { cities: ['x'], next_cursor: 'a+b/=' }];
    },
  });
  assert.deepEqual(await getAllPages('/cities?limit=1', 'cities', 10), ['x', 'y']);
  assert.deepEqual(seen, [null, 'a+b/=']);
  assert.match(requests[1].url, /cursor=a%2Bb%2F%3D$/);
});

test('getAllPages stops at maxPages even when more are offered', async () => {
  let n = 0;
  serve({ '/cities': () => [200, { cities: [n++], next_cursor: 'more' }] });
  assert.deepEqual(await getAllPages('/cities?limit=1', 'cities', 3), [0, 1, 2]);
  assert.equal(requests.length, 3);
});

test('quietly swallows a failure', async () => {
  assert.equal(await quietly(Promise.reject(new Error('x'))), undefined);
  assert.equal(await quietly(Promise.resolve(5)), 5);
});
