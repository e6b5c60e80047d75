// Rendering of the page's tables and lists: the window grid, the alert feed's items, late
// events, dead letters and pipeline health. Functions build nodes from data; they touch the
// document only when called.

import { SEV_LETTER, SEVERITIES, shownTypes, typeLabel } from './constants.js';
import { $, el, sevBadge, timeEl } from './dom.js';
import { fmtClock, fmtDuration, fmtHm, fmtInt } from './format.js';
import { windowAt, windowTotal } from './windows.js';

// ---------- the window grid ----------

/**
 * The window grid's header row: City, Window, one column per shown type (the first 16 of
 * `types`), Total, Severity mix. Type names are the server's text: set as text only.
 */
export function gridHeadRow(types) {
  const tr = el('tr');
  const th = (text, type) => {
    const cell = el('th', null, text);
    cell.scope = 'col';
    if (type) cell.dataset.type = type;
    return cell;
  };
  tr.append(th('City'), th('Window'), ...shownTypes(types).map((t) => th(typeLabel(t), t)), th('Total'),
    th('Severity mix'));
  return tr;
}

/**
 * One row of the window grid: a city's window starting at `start` (`which` is current or
 * previous). The first row of a city carries its name across both rows. `max` is the largest
 * count in the grid, for shading. One cell per shown type (the first 16 of `types`); the total
 * counts all of `types`.
 */
export function gridRow(byKey, city, which, label, start, max, first, types) {
  const tr = el('tr', first ? 'first' : null);
  tr.dataset.city = city;
  tr.dataset.window = which;
  if (first) {
    const th = el('th', 'city', city);
    th.scope = 'row';
    th.rowSpan = 2;
    tr.append(th);
  }
  tr.append(el('td', 'when', label));
  for (const t of shownTypes(types)) tr.append(countCell(windowAt(byKey, t, start), t, max));
  const total = windowTotal(byKey, start, types);
  tr.append(el('td', 'num total', fmtInt(total.count)));
  const mix = el('td', 'mix');
  mix.append(severityMix(total.sev, total.count));
  tr.append(mix);
  return tr;
}

// A count printed in its cell, shaded by size (one hue, so lightness carries it).
function countCell(w, type, max) {
  const count = w?.count ?? 0;
  const td = el('td', 'num', fmtInt(count));
  const alpha = count ? 0.08 + 0.92 * (count / max) : 0;
  td.style.backgroundColor = `rgba(0, 114, 178, ${alpha})`;
  if (alpha > 0.8) td.classList.add('dark'); // white text from where it reads better than black
  td.title = `${type}: ${SEVERITIES.map((s) => `${s} ${w?.sev[s] ?? 0}`).join(', ')}`;
  return td;
}

function severityMix(sev, total) {
  const box = el('div', 'mixbox');
  const bar = el('div', 'sevbar');
  bar.setAttribute('aria-hidden', 'true');
  for (const s of SEVERITIES) {
    if (!sev[s]) continue;
    const seg = el('span', `seg sev-${s}`);
    seg.style.width = `${(100 * sev[s]) / total}%`;
    bar.append(seg);
  }
  const text = el('span', 'mixtext', SEVERITIES.map((s) => `${SEV_LETTER[s]} ${sev[s] ?? 0}`).join(' · '));
  box.append(bar, text);
  return box;
}

// ---------- alerts, late events, dead letters ----------

/** Severity, time, city and type: the head line of an alert or a late event. */
function eventHead(e) {
  const head = el('div', 'alert-head');
  head.append(sevBadge(e.severity), timeEl(e.timestamp), el('span', 'city', e.city), el('span', 'etype', e.event_type));
  return head;
}

export function alertItem(a) {
  const li = el('li', `alert alert-${a.severity}`);
  li.dataset.eventId = a.event_id;
  li.append(eventHead(a), el('p', 'desc', a.description));
  return li;
}

export function lateItem(e) {
  const li = el('li', 'late');
  const watermark = Date.parse(e.watermark);
  const behind = fmtDuration(watermark - Date.parse(e.timestamp));
  li.append(eventHead(e), el('p', 'desc', `${behind} behind the watermark (${fmtClock(watermark)}); its window `
    + `${fmtHm(Date.parse(e.window_start))} was closed. Partition ${e.partition}, offset ${e.offset}.`));
  return li;
}

export function deadItem(d) {
  const li = el('li', 'dead');
  const head = el('div', 'alert-head');
  const where = `${d.source} p${d.partition} @${d.offset}`;
  head.append(el('span', 'kind', d.kind), timeEl(d.received_at), el('span', 'etype', where));
  const prefix = d.payload_prefix;
  const payload = el('code', 'payload', prefix.length > 160 ? `${prefix.slice(0, 160)}…` : prefix);
  payload.title = `${d.payload_len} bytes`;
  li.append(head, el('p', 'desc', d.reason), payload);
  return li;
}

/** The dead letters' counts by kind, largest first. */
export function renderDeadKinds(byKind) {
  const items = Object.entries(byKind)
    .sort((a, b) => b[1] - a[1])
    .map(([kind, n]) => el('li', null, `${kind}: ${fmtInt(n)}`));
  $('dead-kinds').replaceChildren(...items);
}

// ---------- health ----------

function partitionRow(p) {
  const tr = el('tr');
  const lag = p.watermark_lag_ms ?? (p.watermark ? Date.now() - Date.parse(p.watermark) : null);
  tr.append(
    el('td', 'source', p.source),
    el('td', 'num', String(p.partition)),
    el('td', 'num', fmtInt(p.next_offset)),
    el('td', null, p.watermark ? fmtClock(Date.parse(p.watermark)) : 'none yet'),
    el('td', 'num', fmtDuration(lag)),
  );
  return tr;
}

/** The health panel. REST /health nests partitions under pipeline; the stream's health event does not. */
export function renderHealth(h) {
  const partitions = h.partitions ?? h.pipeline?.partitions ?? [];
  $('health-status').replaceChildren(el('span', `status status-${String(h.status).toLowerCase()}`, h.status));
  $('health-store').textContent = h.store ? `${h.store.backend}: ${h.store.status}` : '—';
  $('health-checked').textContent = fmtClock(Date.parse(h.checked_at ?? h.timestamp) || Date.now());
  const rows = [...partitions]
    .sort((a, b) => a.source.localeCompare(b.source) || a.partition - b.partition)
    .map(partitionRow);
  $('health-partitions').replaceChildren(...rows);
}
