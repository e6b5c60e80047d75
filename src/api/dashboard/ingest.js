// The ingest panel: per API key, the events sent over HTTP (GET /ingest) and how fast they come.
// The server gives totals since its process started counting; the rates are the difference
// between two reads over the client's clock. Reading, the rates, the order and the cells'
// contents are plain functions; the rendering touches the document only when called.

import { $, el } from './dom.js';
import { fmtDayTime, fmtInt } from './format.js';

/** Keys shown at most: the busiest, by rate. */
export const MAX_KEYS = 50;

export const NO_KEYS_NOTE = 'No events over HTTP yet: see docs/INGEST.md.';

export const NEED_READ_KEY_NOTE = 'Ingest counts need a read key (--require-auth).';

// One decimal, with the reader's digit grouping.
const rateFormat = new Intl.NumberFormat(undefined, { minimumFractionDigits: 1, maximumFractionDigits: 1 });

/** Events per second, one decimal; an em dash when unknown (the first read, or a reset). */
export function fmtPerSecond(perSecond) {
  return perSecond == null ? '—' : rateFormat.format(perSecond);
}

// ---------- rates ----------

/**
 * What the next read's rates are measured from: `{ since, atMs, accepted }`, `accepted` a Map of
 * key -> accepted total, read at `atMs` (the client's clock) from the body of /ingest.
 */
export function baselineOf(body, atMs) {
  return { since: body.since, atMs, accepted: new Map(body.keys.map((k) => [k.key, k.accepted])) };
}

/**
 * A key's accepted events per second since `previous` (a baselineOf, or null), or null when
 * there is nothing to measure from: the first read, a key not in the previous read, no time
 * between the reads, or counters that restarted (another `since`, or a count that went down:
 * the new count is then the key's baseline, never a negative rate).
 */
export function keyRate(entry, since, previous, nowMs) {
  if (!previous || previous.since !== since) return null;
  const before = previous.accepted.get(entry.key);
  const seconds = (nowMs - previous.atMs) / 1000;
  if (before == null || entry.accepted < before || !(seconds > 0)) return null;
  return (entry.accepted - before) / seconds;
}

/** Busiest first: by rate, descending (unknown rates last), then by key name. */
export function busiestFirst(a, b) {
  const ra = a.rate ?? -Infinity;
  const rb = b.rate ?? -Infinity;
  if (ra !== rb) return rb - ra;
  return a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
}

/**
 * The panel's data from a body of /ingest read at `nowMs`: `{ rows, note, since, baseline }`.
 * `rows` are `{ key, accepted, rejected, throttled, rate }`, busiest first, at most MAX_KEYS;
 * `note` is null or a line to show; `baseline` is what the next read is measured from (every
 * key, shown or not).
 */
export function ingestView(body, previous, nowMs) {
  const { keys, since } = body;
  const baseline = baselineOf(body, nowMs);
  if (keys.length === 0) return { rows: [], note: NO_KEYS_NOTE, since, baseline };
  const rows = keys.map((k) => ({ ...k, rate: keyRate(k, since, previous, nowMs) })).sort(busiestFirst);
  const note = rows.length > MAX_KEYS ? `The ${MAX_KEYS} busiest of ${rows.length} keys.` : null;
  return { rows: rows.slice(0, MAX_KEYS), note, since, baseline };
}

// ---------- reading ----------

/**
 * Reads /ingest and returns its ingestView, measured from `previous` with `clock` (ms) read when
 * the answer came. An error answer is a note with no rows and no baseline (401 and 403: the
 * page has no read key); errors without an answer (the API unreachable) are thrown.
 */
export async function loadIngest(getJson, previous, clock = Date.now) {
  let body;
  try {
    body = await getJson('/ingest');
  } catch (err) {
    if (err.status == null) throw err;
    const note = err.status === 401 || err.status === 403 ? NEED_READ_KEY_NOTE
      : `Ingest counts unavailable: ${err.message}.`;
    return { rows: [], note, since: null, baseline: null };
  }
  return ingestView(body, previous, clock());
}

// ---------- cells ----------

/**
 * The cells of a key's row, in the table's column order: `{ text, className, title }`. The key
 * is user-supplied: it is only ever text.
 */
export function ingestCells(row) {
  return [
    { text: row.key, className: 'ingest-key' },
    row.rate == null
      ? { text: fmtPerSecond(null), className: 'num', title: 'Measured from the next read' }
      : { text: fmtPerSecond(row.rate), className: 'num' },
    { text: fmtInt(row.accepted), className: 'num' },
    { text: fmtInt(row.rejected), className: 'num' },
    { text: fmtInt(row.throttled), className: 'num' },
  ];
}

// ---------- rendering ----------

function ingestRow(row) {
  const tr = el('tr');
  tr.dataset.key = row.key;
  for (const cell of ingestCells(row)) {
    const td = el('td', cell.className, cell.text);
    if (cell.title) td.title = cell.title;
    tr.append(td);
  }
  return tr;
}

/** Draws what loadIngest returned into the panel. */
export function renderIngest({ rows, note, since }) {
  $('ingest-rows').replaceChildren(...rows.map(ingestRow));
  $('ingest-note').textContent = note ?? '';
  $('ingest-note').hidden = !note;
  const sinceMs = Date.parse(since);
  $('ingest-since').textContent = Number.isFinite(sinceMs) ? fmtDayTime(sinceMs) : '…';
  $('ingest-since').title = since ?? '';
}
