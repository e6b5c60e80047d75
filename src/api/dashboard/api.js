// Fetch helpers for the public API. Nothing here touches the DOM; `fetch` is looked up when a
// request is made, so node can import this module (and tests can stand in for fetch).

import { API } from './constants.js';

/** How long a request may take before it counts as failed. */
export const TIMEOUT_MS = 12000;

let reachability = () => {};

/**
 * Registers the function told, after each request, whether the API answered (true) or not
 * (false: a network failure or a time-out). Any HTTP answer, even an error, means reachable.
 */
export function onReachability(callback) {
  reachability = callback;
}

/**
 * GETs `API + path` and returns its JSON body. Throws on a network failure, a time-out, or an
 * error status; the error carries `status` and the API's `message` when there was an answer.
 * /health answers 503 with a body when the store is DOWN, so that body is returned.
 */
export async function getJson(path) {
  let res;
  try {
    res = await globalThis.fetch(API + path, {
      headers: { accept: 'application/json' },
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
  } catch (err) {
    reachability(false);
    throw err;
  }
  reachability(true);
  const body = await res.json().catch(() => null);
  if (!res.ok && !(path.startsWith('/health') && body)) {
    const err = new Error(body?.message || `HTTP ${res.status}`);
    err.status = res.status;
    throw err;
  }
  return body;
}

/**
 * The items under `key` of a paged list, following `next_cursor` for at most `maxPages` pages.
 * `path` must already hold a query string.
 */
export async function getAllPages(path, key, maxPages) {
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

/** Loaders swallow their errors: the banner reports unreachability, and the next reload retries. */
export function quietly(promise) {
  return promise.catch(() => undefined);
}
