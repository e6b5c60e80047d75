// The history section: a city and a range picked, four charts (one per event type) of the
// windows over that range, at the resolution history.js chooses. One request per type, each
// following next_cursor. The DOM is touched only once the view is created.

import { getJson, quietly } from './api.js';
import { createHistoryChart, historyChartSize } from './charts.js';
import { TYPES } from './constants.js';
import { $ } from './dom.js';
import { fmtInt, isoSeconds, spanLabel } from './format.js';
import {
  chartData, chooseResolution, DEFAULT_RANGE, fillBuckets, historyPath, keptFromOf, MAX_PAGES,
  rangeByKey, RANGES, resolutionNote, totals,
} from './history.js';

/** How often the shown history is read again (its last window fills meanwhile). */
export const REFRESH_MS = 60000;

/**
 * Creates the history view over the markup of #panel-history. `loadResolutions()` reads
 * /resolutions afresh (their kept_from moves) and returns them parsed, finest first.
 * Returns {setCities(names, preferred)}: the cities the page knows, and the one to show first.
 */
export function createHistoryView({ loadResolutions }) {
  const panel = $('panel-history');
  const citySelect = $('history-city');
  const rangeSelect = $('history-range');
  const charts = new Map(); // type -> uPlot
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
    const results = await Promise.allSettled(TYPES.map((t) => loadType(city, t, choice)));
    if (gen !== generation) return; // the user chose something else meanwhile

    const failed = [];
    let keptFromMs = choice.resolution.keptFromMs;
    TYPES.forEach((type, i) => {
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
    if (failed.length === TYPES.length) {
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
    const box = $(`history-${type}`);
    charts.get(type)?.destroy();
    charts.delete(type);
    if (typeof globalThis.uPlot !== 'undefined') {
      charts.set(type, createHistoryChart(box, chartData(filled), spanMs));
    }
    $(`history-${type}-sum`).textContent = sum.points === 0
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
    const box = $(`history-${type}`);
    for (const key of Object.keys(box.dataset)) delete box.dataset[key];
    $(`history-${type}-sum`).textContent = message;
  }

  // Only width changes matter; the charts set their boxes' height themselves.
  function watchWidth() {
    let width = 0;
    new ResizeObserver(() => {
      const w = $('history-charts').clientWidth;
      if (w === width) return;
      width = w;
      for (const [type, u] of charts) u.setSize(historyChartSize($(`history-${type}`)));
    }).observe($('history-charts'));
  }

  return { setCities };
}
