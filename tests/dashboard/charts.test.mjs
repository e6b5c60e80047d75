// The charts' pure parts: line styles, marker shapes, and the markers' path builder.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HISTORY_STYLES, markerPaths, seriesStyle, shapePath, SHAPES } from '../../src/api/dashboard/charts.js';

test('the first many lines differ by more than colour', () => {
  const seen = new Set();
  for (let i = 0; i < 20; i++) {
    const st = seriesStyle(i);
    const key = JSON.stringify([st.dash, st.shape, st.hollow]);
    assert.ok(!seen.has(key), `line ${i} looks like an earlier one without its colour`);
    seen.add(key);
  }
  assert.deepEqual(seriesStyle(0), seriesStyle(0));
});

test('history: events and alerts differ by dash and marker, not only colour', () => {
  const { events, alerts } = HISTORY_STYLES;
  assert.notDeepEqual(events.dash, alerts.dash);
  assert.ok(alerts.dash.length > 0 && events.dash.length === 0, 'alerts dashed, events solid');
  assert.notEqual(events.shape, alerts.shape);
  assert.notEqual(events.hollow, alerts.hollow);
});

test('shapePath: every shape is a path around its centre, within its radius', () => {
  for (const shape of SHAPES) {
    const d = shapePath(shape, 10, 20, 4);
    assert.match(d, /^M/);
    const nums = d.match(/-?\d+(\.\d+)?/g).map(Number);
    assert.ok(nums.length >= 4, `${shape}: ${d}`);
  }
  // Absolute points of the square and the diamond, checked exactly.
  assert.equal(shapePath('square', 10, 20, 4), 'M6,16h8v8h-8Z');
  assert.equal(shapePath('diamond', 0, 0, 5), 'M0,-6L5,0L0,6L-5,0Z');
  assert.equal(shapePath('unknown', 0, 0, 1), shapePath('circle', 0, 0, 1), 'a circle by default');
});

test('markerPaths draws a marker at each non-null point, in canvas pixels', () => {
  globalThis.devicePixelRatio = 2;
  globalThis.Path2D = class { constructor(d) { this.d = d; } };
  try {
    const u = { data: [[0, 1, 2, 3], [5, null, 7, 8]], valToPos: (v, scale) => (scale === 'x' ? v * 100 : v) };
    const { stroke, fill } = markerPaths('square')(u, 1, 0, 2);
    assert.equal(stroke, fill);
    const squares = stroke.d.match(/M/g).length;
    assert.equal(squares, 2, 'indexes 0 and 2; the null at 1 and the 3 beyond idx1 are skipped');
    assert.ok(stroke.d.startsWith(shapePath('square', 0, 5, 7)), 'radius 3.5 × devicePixelRatio');
  } finally {
    delete globalThis.Path2D;
    delete globalThis.devicePixelRatio;
  }
});
