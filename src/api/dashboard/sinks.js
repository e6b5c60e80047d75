// The alert delivery panel: the sinks alerts go to (GET /rules) and how delivering to each goes
// (GET /deliveries). Reading, the state rule and the cells' contents are plain functions; the
// rendering touches the document only when called.

import { DAY_MS } from './constants.js';
import { $, el } from './dom.js';
import { fmtClock, fmtDayTime } from './format.js';

/** Sinks read at most: each costs three requests per refresh. */
export const MAX_SINKS = 32;

export const NO_SINKS_NOTE = 'No sinks: start with --webhook URL or a rules file (docs/ALERTING.md).';

/** Characters of an error shown in its cell; the whole text is its title. */
const MAX_ERROR_CHARS = 120;

/**
 * A sink's state, from its newest delivery (`latest`, null when none) and the counts of its
 * pending and failed deliveries (only whether they are above 0 matters). In this order:
 * - failing: failed deliveries are kept (one stays failed until it is sent again or its alert
 *   is purged), or the latest failed;
 * - idle: no delivery yet;
 * - retrying: the latest is pending after at least one attempt, and pending ones are still
 *   listed (the reads are separate; one delivered in between is not retrying);
 * - ok: otherwise (the latest was delivered, or waits for its first attempt).
 */
export function sinkState(latest, pendingCount, failedCount) {
  if (failedCount > 0 || latest?.status === 'failed') return 'failing';
  if (!latest) return 'idle';
  if (pendingCount > 0 && latest.status === 'pending' && latest.attempts > 0) return 'retrying';
  return 'ok';
}

// ---------- reading ----------

// The newest delivery to a sink, and whether it has pending and failed ones.
async function sinkSummary(getJson, name) {
  const base = `/deliveries?sink=${encodeURIComponent(name)}&limit=1`;
  const [all, pending, failed] = await Promise.all([
    getJson(base), getJson(`${base}&status=pending`), getJson(`${base}&status=failed`),
  ]);
  const latest = all.deliveries[0] ?? null;
  return {
    latest,
    lastFailed: failed.deliveries[0] ?? null,
    state: sinkState(latest, pending.count, failed.count),
  };
}

/**
 * The panel's data: `{ sinks: [{ sink, latest, lastFailed, state }], note }`, for the first
 * MAX_SINKS sinks of /rules; `note` is null or a line to show. When /deliveries answers with an
 * error (503 when the store keeps no outbox), the note says so and there are no rows. Errors
 * without an answer (the API unreachable) and those of /rules are thrown.
 */
export async function loadSinks(getJson) {
  const { sinks } = await getJson('/rules');
  if (sinks.length === 0) return { sinks: [], note: NO_SINKS_NOTE };
  const shown = sinks.slice(0, MAX_SINKS);
  let summaries;
  try {
    summaries = await Promise.all(shown.map((s) => sinkSummary(getJson, s.name)));
  } catch (err) {
    if (err.status == null) throw err;
    return { sinks: [], note: `Delivery state unavailable: ${err.message}.` };
  }
  const note = sinks.length > shown.length ? `The first ${shown.length} of ${sinks.length} sinks.` : null;
  return { sinks: shown.map((sink, i) => ({ sink, ...summaries[i] })), note };
}

// ---------- cells ----------

/** An instant's clock time when within a day of `now`, its day and time otherwise. */
function whenText(ms, now) {
  return Math.abs(now - ms) < DAY_MS ? fmtClock(ms) : fmtDayTime(ms);
}

/** The error to show: the latest delivery's, else that of the newest failed one. */
export function lastError(row) {
  return row.latest?.last_error ?? row.lastFailed?.last_error ?? '';
}

/**
 * The cells of a sink's row, in the table's column order: `{ text, className, title, detail }`
 * (`detail`, when set, is a second line). The URL is shown as /rules gives it (scheme and host).
 */
export function sinkCells(row, now = Date.now()) {
  const { sink, latest, state } = row;
  const error = lastError(row);
  return [
    { text: sink.name, className: 'sink', detail: sink.url },
    { text: sink.format },
    { text: sink.signed ? 'yes' : 'no' },
    { text: sink.rules.length ? sink.rules.join(', ') : 'all' },
    { text: state, className: `state state-${state}` },
    latest
      ? { text: whenText(Date.parse(latest.updated_at), now), title: `${latest.status} after `
        + `${latest.attempts} attempt(s); updated ${latest.updated_at}` }
      : { text: '—' },
    {
      text: error.length > MAX_ERROR_CHARS ? `${error.slice(0, MAX_ERROR_CHARS)}…` : error,
      className: 'sink-error',
      title: error,
    },
  ];
}

// ---------- rendering ----------

function sinkRow(row) {
  const tr = el('tr');
  tr.dataset.sink = row.sink.name;
  for (const cell of sinkCells(row)) {
    const td = el('td', cell.className, cell.text);
    if (cell.title) td.title = cell.title;
    if (cell.detail) td.append(el('span', 'detail', cell.detail));
    tr.append(td);
  }
  return tr;
}

/** Draws what loadSinks returned into the panel. */
export function renderSinks({ sinks, note }) {
  $('sinks-rows').replaceChildren(...sinks.map(sinkRow));
  $('sinks-note').textContent = note ?? '';
  $('sinks-note').hidden = !note;
}
