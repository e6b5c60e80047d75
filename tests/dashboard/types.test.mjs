// The event types are the server's (`--event-types`, GET /api/v1/event-types): reading them,
// the 16 shown, their headings, and the grid and history markup drawn from any list.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  EVENT_TYPE_NAME, MAX_EVENT_TYPES, MAX_SHOWN_TYPES, parseEventTypes, SEED_TYPES, shownTypes, typeLabel,
  typesNote,
} from '../../src/api/dashboard/constants.js';
import { gridHeadRow, gridRow } from '../../src/api/dashboard/panels.js';
import { historySection } from '../../src/api/dashboard/history-view.js';
import { mergeWindow } from '../../src/api/dashboard/windows.js';

const CUSTOM = ['flood', 'parade', 'power-outage'];
const many = (n) => Array.from({ length: n }, (_, i) => `type_${i}`);

test('the seed types are the server default, in its order, and cannot be changed', () => {
  assert.deepEqual([...SEED_TYPES], ['traffic', 'weather', 'incident', 'construction']);
  assert.ok(Object.isFrozen(SEED_TYPES));
});

test('parseEventTypes: the server list, in its order', () => {
  assert.deepEqual(parseEventTypes({ event_types: CUSTOM }), CUSTOM);
  assert.deepEqual(parseEventTypes({ event_types: [...SEED_TYPES] }), [...SEED_TYPES]);
  assert.deepEqual(parseEventTypes({ event_types: ['z', 'a'] }), ['z', 'a'], 'not sorted');
  assert.equal(parseEventTypes({ event_types: many(MAX_EVENT_TYPES) }).length, 64);
  assert.deepEqual(parseEventTypes({ event_types: ['a'.repeat(32), '0-9_x'] }), ['a'.repeat(32), '0-9_x']);
  const body = { event_types: ['flood'] };
  const list = parseEventTypes(body);
  list.push('x');
  assert.deepEqual(body.event_types, ['flood'], 'a copy');
});

test('parseEventTypes throws on a body off the contract (the page then uses the seed types)', () => {
  const bad = [
    null, {}, { event_types: [] }, { event_types: 'traffic' }, { event_types: many(65) },
    { event_types: ['Traffic'] }, { event_types: [''] }, { event_types: ['a'.repeat(33)] },
    { event_types: ['<img src=x onerror=alert(1)>'] }, { event_types: ['a b'] }, { event_types: [7] },
    { event_types: ['flood', 'flood'] }, { event_types: ['ok', null] },
  ];
  for (const body of bad) assert.throws(() => parseEventTypes(body), Error, JSON.stringify(body));
  assert.ok(!EVENT_TYPE_NAME.test('é'));
});

test('shownTypes and typesNote: at most 16, with a note saying so', () => {
  assert.equal(MAX_SHOWN_TYPES, 16);
  assert.deepEqual(shownTypes(CUSTOM), CUSTOM);
  assert.equal(typesNote(CUSTOM), '');
  assert.deepEqual(shownTypes(SEED_TYPES), [...SEED_TYPES]);
  assert.equal(typesNote(SEED_TYPES), '');
  assert.deepEqual(shownTypes(many(16)), many(16));
  assert.equal(typesNote(many(16)), '', 'exactly 16: all shown');
  assert.deepEqual(shownTypes(many(17)), many(16));
  assert.equal(typesNote(many(17)), 'The first 16 of 17 event types.');
  assert.deepEqual(shownTypes(many(64)), many(16));
  assert.equal(typesNote(many(64)), 'The first 16 of 64 event types.');
});

test('typeLabel: a capital, and spaces for underscores', () => {
  assert.equal(typeLabel('traffic'), 'Traffic');
  assert.equal(typeLabel('power-outage'), 'Power-outage');
  assert.equal(typeLabel('power_outage'), 'Power outage');
  assert.equal(typeLabel('5g'), '5g');
});

// ---------- markup, over a small stand-in document ----------

// Elements that hold text and attributes only: setting innerHTML throws.
class FakeElement {
  constructor(tag) {
    this.tagName = tag.toUpperCase();
    this.children = [];
    this.dataset = {};
    this.style = {};
    this.attributes = {};
    this.className = '';
    this.textContent = '';
    const classes = new Set();
    this.classList = { add: (c) => classes.add(c), has: (c) => classes.has(c) };
  }
  set innerHTML(_) { throw new Error('innerHTML used'); }
  append(...nodes) { this.children.push(...nodes); }
  setAttribute(k, v) { this.attributes[k] = String(v); }
}

function withDocument(fn) {
  globalThis.document = { createElement: (tag) => new FakeElement(tag) };
  try {
    return fn();
  } finally {
    delete globalThis.document;
  }
}

const texts = (tr) => tr.children.map((c) => c.textContent);
const T0 = Date.UTC(2026, 10, 25, 10, 0);
const win = (type, count) => ({
  event_type: type, window_start: new Date(T0).toISOString(), event_count: count, severity_counts: { low: count },
});

test('gridHeadRow: one column per type, between Window and Total, names as text', () => withDocument(() => {
  assert.deepEqual(texts(gridHeadRow(SEED_TYPES)),
    ['City', 'Window', 'Traffic', 'Weather', 'Incident', 'Construction', 'Total', 'Severity mix']);
  const head = gridHeadRow(CUSTOM);
  assert.deepEqual(texts(head), ['City', 'Window', 'Flood', 'Parade', 'Power-outage', 'Total', 'Severity mix']);
  assert.deepEqual(head.children.slice(2, 5).map((c) => c.dataset.type), CUSTOM);
  assert.ok(head.children.every((c) => c.scope === 'col'));
  const wide = gridHeadRow(many(20));
  assert.equal(wide.children.length, 2 + 16 + 2, 'the first 16 types only');
  assert.equal(wide.children[17].dataset.type, 'type_15');
}));

test('gridRow: a cell per shown type; the total counts every type', () => withDocument(() => {
  const byKey = new Map();
  mergeWindow(byKey, win('flood', 2));
  mergeWindow(byKey, win('power-outage', 5));
  const row = gridRow(byKey, 'SF', 'current', 'now', T0, 5, true, CUSTOM);
  // City, Window, 3 types, Total, Severity mix.
  assert.deepEqual(texts(row).slice(0, 6), ['SF', 'now', '2', '0', '5', '7']);
  assert.equal(row.children[4].title, 'power-outage: low 5, medium 0, high 0, critical 0');

  const seed = gridRow(byKey, 'SF', 'previous', 'before', T0, 5, false, SEED_TYPES);
  assert.deepEqual(texts(seed).slice(0, 6), ['before', '0', '0', '0', '0', '0'], 'other types: zeros');

  const types = many(20);
  const all = new Map();
  types.forEach((t) => mergeWindow(all, win(t, 1)));
  const wide = gridRow(all, 'SF', 'current', 'now', T0, 1, false, types);
  assert.equal(wide.children.length, 1 + 16 + 2, 'Window, 16 types, Total, Severity mix');
  assert.equal(wide.children[17].textContent, '20', 'the total counts all 20 types');
}));

test('historySection: the ids and heading of one type, the name as text', () => withDocument(() => {
  const { section, sum, box } = historySection('power-outage');
  assert.equal(section.className, 'history-chart');
  assert.equal(section.attributes['aria-labelledby'], 'h-history-power-outage');
  assert.equal(section.children[0].id, 'h-history-power-outage');
  assert.equal(section.children[0].textContent, 'Power-outage');
  assert.equal(sum.id, 'history-power-outage-sum');
  assert.equal(box.id, 'history-power-outage');
  assert.equal(box.className, 'chart chart-small');
  assert.deepEqual(section.children, [section.children[0], sum, box]);
}));
