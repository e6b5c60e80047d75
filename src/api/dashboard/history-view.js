// The history section: a city and a range picked, one chart per event type (the first 16 of the
// server's types) of the windows over that range, at the resolution history.js chooses. One
// request per type shown, each following next_cursor. The DOM is touched only once the view is
// created.

import { getJson, quietly } from './api.js';
import { createHistoryChart, historyChartSize } from './charts.js';
import { shownTypes, typeLabel, typesNote } from './constants.js';
import { $, el } from './dom.js';
import { fmtInt, isoSeconds, spanLabel } from './format.js';
import {
  chartData, chooseResolution, DEFAULT_RANGE, fillBuckets, historyPath, keptFromOf, MAX_PAGES,
  rangeByKey, RANGES, resolutionNote, totals,
} from './history.js';

/** How often the shown history is read again (its last window fills meanwhile). */
export const REFRESH_MS = 60000;

/**
 * One type's chart section: a heading, the sum line and the chart's box, with the ids
 * history-TYPE, history-TYPE-sum and h-history-TYPE (names are a-z 0-9 - _, valid in ids).
 * The name is the server's text: set as text and attributes only.
 */
export function historySection(type) {
  const section = el('section', 'history-chart');
  section.dataset.type = type;
  section.setAttribute('aria-labelledby', `h-history-${type}`);
  const heading = el('h3', null, typeLabel(type));
  heading.id = `h-history-${type}`;
  const sum = el('p', 'note');
  sum.id = `history-${type}-sum`;
  const box = el('div', 'chart chart-small');
  box.id = `history-${type}`;
  section.append(heading, sum, box);
  return { section, sum, box };
}

/**
 * Creates the history view over the markup of #panel-history. `loadResolutions()` reads
 * /resolutions afresh (their kept_from moves) and returns them parsed, finest first. `types` are
 * the server's event types; a chart is drawn for each of the first 16.
 * Returns {setCities(names, preferred)}: the cities the page knows, and the one to show first.
 */
export function createHistoryView({ loadResolutions, types }) {
  const panel = $('panel-history');
  const citySelect = $('history-city');
  const rangeSelect = $('history-range');
  const charts = new Map(); // type -> uPlot
  const shown = shownTypes(types);
  const boxes = new Map(shown.map((t) => [t, historySection(t)])); // type -> {section, sum, box}
  $('history-charts').replaceChildren(...[...boxes.values()].map((b) => b.section));
  const note = $('history-types-note');
  note.textContent = typesNote(types);
  note.hidden = !note.textContent;
  let cityNames = null; // the option list last drawn, joined
  let generation = 0; // the latest load; older ones drop their answers

  rangeSelect.replaceChildren(...RANGES.map((r) => new Option(`Last ${r.label}`, r.key)));
  rangeSelect.value = DEFAULT_RANGE;
  citySelect.addEventListener('change', () => quietly(load()));
  rangeSelect.addEventListener('change', () => quietly(load()));
  watchWidth();
  setInterval(() => {
    if (!document.hidden && citySelect.value) quietly(load({ quiet: true }));
  }, REFRESH_MS);

  function setStatus(text) {
    const status = $('history-status');
    if (status.textContent !== text) status.textContent = text;
  }

  /** Redraws the city options when the list changed; loads the first city's history once. */
  function setCities(names, preferred) {
    const current = citySelect.value;
    const all = [...new Set([...names, current].filter(Boolean))].sort((a, b) => a.localeCompare(b));
    const joined = all.join('\n');
    if (joined === cityNames) return;
    cityNames = joined;
    if (all.length === 0) setStatus('No city has stored events yet.');
    citySelect.replaceChildren(...all.map((c) => new Option(c, c)));
    citySelect.value = current || preferred || all[0] || '';
    if (!current && citySelect.value) quietly(load());
  }

  async function load({ quiet = false } = {}) {
    const gen = ++generation;
    const city = citySelect.value;
    const range = rangeByKey(rangeSelect.value);
    if (!city) return;
    if (!quiet) {
      panel.dataset.state = 'loading';
      setStatus(`Loading ${city}, last ${range.label}…`);
    }
    let choice;
    try {
      choice = chooseResolution(await loadResolutions(), range.ms, Date.now());
    } catch (err) {
      if (gen !== generation) return;
      panel.dataset.state = 'error';
      setStatus(`Cannot read the resolutions the server keeps (${err.message}). Retrying every minute.`);
      return;
    }
    const results = await Promise.allSettled(shown.map((t) => loadType(city, t, choice)));
    if (gen !== generation) return; // the user chose something else meanwhile

    const failed = [];
    let keptFromMs = choice.resolution.keptFromMs;
    shown.forEach((type, i) => {
      const r = results[i];
      if (r.status === 'fulfilled') {
        keptFromMs = r.value.keptFromMs;
        draw(type, city, range, choice, r.value);
      } else {
        failed.push(type);
        clear(type, `Could not load: ${r.reason?.message ?? r.reason}`);
      }
    });
    const head = `${city}, last ${range.label}. `;
    if (failed.length === shown.length) {
      panel.dataset.state = 'error';
      setStatus(`${head}Could not load the history: ${results[0].reason?.message ?? 'no answer'}. Retrying every minute.`);
      return;
    }
    panel.dataset.state = 'ready';
    panel.dataset.resolution = choice.resolution.name;
    const missing = failed.length ? ` Not loaded: ${failed.join(', ')}.` : '';
    setStatus(`${head}${resolutionNote(choice, keptFromMs)}${missing}`);
  }

  // One type's windows over the chosen range, page after page.
  async function loadType(city, type, choice) {
    const items = [];
    let keptFromMs = choice.resolution.keptFromMs;
    let cursor = null;
    for (let page = 0; page < MAX_PAGES; page++) {
      const body = await getJson(historyPath(city, type, choice, cursor));
      if (page === 0) keptFromMs = keptFromOf(body, choice.resolution);
      items.push(...body.aggregations);
      cursor = body.next_cursor;
      if (!cursor) break;
    }
    return { items, keptFromMs };
  }

  function draw(type, city, range, choice, { items, keptFromMs }) {
    const spanMs = choice.resolution.spanMs;
    const filled = fillBuckets(items, { from: choice.from, to: choice.to, spanMs, keptFromMs });
    const sum = totals(filled);
    const { box, sum: sumLine } = boxes.get(type);
    charts.get(type)?.destroy();
    charts.delete(type);
    if (typeof globalThis.uPlot !== 'undefined') {
      charts.set(type, createHistoryChart(box, chartData(filled), spanMs));
    }
    sumLine.textContent = sum.points === 0
      ? `No ${type} data kept for ${city} in the last ${range.label}.`
      : `${fmtInt(sum.events)} events, ${fmtInt(sum.alerts)} alerts (high or critical) in ${city}, `
        + `per ${spanLabel(spanMs)} window.`;
    // For tests and curious users: what is drawn.
    Object.assign(box.dataset, {
      resolution: choice.resolution.name,
      from: isoSeconds(choice.from),
      to: isoSeconds(choice.to),
      windows: String(filled.starts.length),
      points: String(sum.points),
      events: String(sum.events),
      alerts: String(sum.alerts),
    });
  }

  function clear(type, message) {
    charts.get(type)?.destroy();
    charts.delete(type);
    const { box, sum } = boxes.get(type);
    for (const key of Object.keys(box.dataset)) delete box.dataset[key];
    sum.textContent = message;
  }

  // Only width changes matter; the charts set their boxes' height themselves.
  function watchWidth() {
    let width = 0;
    new ResizeObserver(() => {
      const w = $('history-charts').clientWidth;
      if (w === width) return;
      width = w;
      for (const [type, u] of charts) u.setSize(historyChartSize(boxes.get(type).box));
    }).observe($('history-charts'));
  }

  return { setCities };
}
