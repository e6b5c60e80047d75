// Charts, drawn with uPlot (the vendored IIFE, read as globalThis.uPlot when a chart is made).
// Lines differ by dash and marker as well as colour, and the legend shows a sample of each
// line. Nothing touches the DOM or uPlot at import time: node can import this module.

import { fmtDayTime, fmtHm, fmtInt, fmtRate, spanLabel } from './format.js';

// Okabe–Ito (colour-blind safe), yellow swapped for grey: yellow vanishes on white.
export const PALETTE = ['#0072B2', '#E69F00', '#009E73', '#CC79A7', '#D55E00', '#56B4E9', '#000000', '#7F7F7F'];
export const DASHES = [[], [10, 4], [2, 3], [12, 4, 3, 4], [6, 6], [1, 4], [18, 6], [8, 3, 2, 3, 2, 3]];
export const SHAPES = ['circle', 'square', 'triangle', 'diamond', 'cross'];

/** The history charts' two lines: events solid with dots, alerts dashed with hollow triangles. */
export const HISTORY_STYLES = {
  events: { colour: '#0072B2', dash: [], shape: 'circle', hollow: false },
  alerts: { colour: '#D55E00', dash: [6, 4], shape: 'triangle', hollow: true },
};

const AXIS_STYLE = { stroke: '#333', grid: { stroke: '#e3e3e3' }, ticks: { stroke: '#ccc' } };

/**
 * The look of the i-th line (0-based): colour, dash and marker cycle at different lengths, and
 * markers are hollow on every other round of shapes, so that no two of the first many lines match.
 */
export function seriesStyle(i) {
  return {
    colour: PALETTE[i % PALETTE.length],
    dash: DASHES[i % DASHES.length],
    shape: SHAPES[i % SHAPES.length],
    hollow: Math.floor(i / SHAPES.length) % 2 === 1,
  };
}

/**
 * SVG path of a marker shape centred on (x, y); used both on the canvas (via Path2D) and in the
 * legend's swatches, so they match.
 */
export function shapePath(shape, x, y, r) {
  switch (shape) {
    case 'square': return `M${x - r},${y - r}h${2 * r}v${2 * r}h${-2 * r}Z`;
    case 'triangle': return `M${x},${y - r}L${x + r},${y + r * 0.8}L${x - r},${y + r * 0.8}Z`;
    case 'diamond': return `M${x},${y - r * 1.2}L${x + r},${y}L${x},${y + r * 1.2}L${x - r},${y}Z`;
    case 'cross': return `M${x - r},${y - r}L${x + r},${y + r}M${x + r},${y - r}L${x - r},${y + r}`;
    default: return `M${x - r},${y}a${r},${r} 0 1,0 ${2 * r},0a${r},${r} 0 1,0 ${-2 * r},0Z`;
  }
}

/** A uPlot points path builder drawing `shape` at every non-null point. */
export function markerPaths(shape) {
  return (u, seriesIdx, idx0, idx1) => {
    const r = 3.5 * devicePixelRatio;
    let d = '';
    for (let i = idx0; i <= idx1; i++) {
      const v = u.data[seriesIdx][i];
      if (v == null) continue;
      d += shapePath(shape, u.valToPos(u.data[0][i], 'x', true), u.valToPos(v, 'y', true), r);
    }
    const path = new Path2D(d);
    return { stroke: path, fill: path, clip: null, flags: 0 };
  };
}

/** uPlot's y range: from 0, with headroom, never less than 1. */
function yRange(u, min, max) {
  return [0, Math.max(1, Math.ceil((max || 0) * 1.15))];
}

/** Options of a line drawn in style `st`; `points` overrides the markers' options. */
function lineSeries(label, st, value, points = {}) {
  return {
    label,
    stroke: st.colour,
    width: 2,
    dash: st.dash,
    value,
    points: {
      show: true,
      size: 8,
      width: 1.5,
      stroke: st.colour,
      fill: st.hollow ? '#fff' : st.colour,
      paths: markerPaths(st.shape),
      ...points,
    },
  };
}

/** Replaces uPlot's colour-only legend markers with a sample of the line: colour, dash and marker. */
export function decorateLegend(u, styleOf) {
  u.root.querySelectorAll('.u-legend .u-series').forEach((row, i) => {
    const marker = row.querySelector('.u-marker');
    if (i === 0 || !marker) return;
    marker.replaceChildren(lineSwatch(styleOf(i)));
    marker.classList.add('swatch');
  });
}

function lineSwatch(st) {
  const NS = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('viewBox', '0 0 36 12');
  svg.setAttribute('aria-hidden', 'true');
  const svgEl = (tag, attrs) => {
    const node = document.createElementNS(NS, tag);
    Object.entries(attrs).forEach(([k, v]) => node.setAttribute(k, v));
    return node;
  };
  svg.append(
    svgEl('line', { x1: 0, y1: 6, x2: 36, y2: 6, stroke: st.colour, 'stroke-width': 2,
      'stroke-dasharray': st.dash.join(' ') || 'none' }),
    svgEl('path', { d: shapePath(st.shape, 18, 6, 3.5), stroke: st.colour, 'stroke-width': 1.5,
      fill: st.hollow ? '#fff' : st.colour }),
  );
  return svg;
}

// ---------- the live chart: events per minute by city ----------

/** The live chart's size for its box: the box's width, a fixed height. */
export function liveChartSize(box) {
  const width = Math.max(200, box.clientWidth);
  return { width, height: width < 500 ? 280 : 300 };
}

/**
 * The live chart in `box`: one line per city of events per minute, one point per window of
 * `spanMs`. `data` is [window starts in s, rates of each city…].
 */
export function createLiveChart(box, cities, data, spanMs) {
  const opts = {
    ...liveChartSize(box),
    scales: { x: { time: true }, y: { range: yRange } },
    axes: [AXIS_STYLE, { ...AXIS_STYLE, label: `events/min, ${spanLabel(spanMs)} windows`, size: 50 }],
    series: [
      { label: 'Window', value: (u, v) => (v == null ? 'last complete' : fmtHm(v * 1000)) },
      ...cities.map((city, i) => lineSeries(city, seriesStyle(i),
        // Away from the cursor, the legend shows the last complete window.
        (u, v, si, idx) => fmtRate(idx == null ? u.data[si][u.data[si].length - 2] : v))),
    ],
    legend: { live: true },
  };
  const u = new globalThis.uPlot(opts, data, box);
  decorateLegend(u, (i) => seriesStyle(i - 1));
  return u;
}

// ---------- the history charts: one event type's windows over a range ----------

/** A history chart's size for its box. */
export function historyChartSize(box) {
  const width = Math.max(200, box.clientWidth);
  return { width, height: width < 500 ? 200 : 220 };
}

// Markers only where the points are far enough apart to tell them; the dash tells the lines
// apart everywhere else.
function sparsePoints(u) {
  const n = Math.max(1, u.data[0].length);
  return u.bbox.width / n >= 10 * devicePixelRatio;
}

/**
 * A history chart in `box`: events per window and alerts (high + critical) per window, of
 * windows of `spanMs`. `data` is [window starts in s, events, alerts]; nulls (windows not kept)
 * are gaps. Away from the cursor, the legend shows the range's totals.
 */
export function createHistoryChart(box, data, spanMs) {
  const total = (u, si) => `${fmtInt(u.data[si].reduce((a, v) => a + (v ?? 0), 0))} in range`;
  const value = (u, v, si, idx) => (idx == null ? total(u, si) : v == null ? 'not kept' : fmtInt(v));
  const opts = {
    ...historyChartSize(box),
    scales: { x: { time: true }, y: { range: yRange } },
    axes: [AXIS_STYLE, { ...AXIS_STYLE, label: `per ${spanLabel(spanMs)} window`, size: 50 }],
    series: [
      { label: 'Window', value: (u, v) => (v == null ? 'whole range' : fmtDayTime(v * 1000)) },
      lineSeries('Events', HISTORY_STYLES.events, value, { show: sparsePoints, size: 6 }),
      lineSeries('Alerts (high + critical)', HISTORY_STYLES.alerts, value, { show: sparsePoints }),
    ],
    legend: { live: true },
  };
  const u = new globalThis.uPlot(opts, data, box);
  decorateLegend(u, (i) => (i === 1 ? HISTORY_STYLES.events : HISTORY_STYLES.alerts));
  return u;
}
