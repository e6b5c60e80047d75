// The page's files agree with each other and with what the binary serves: every module the
// page loads or imports is in src/api/dashboard.rs's ASSETS (with a JavaScript content type),
// every file there exists, and no module touches the DOM when imported.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const DIR = path.join(REPO, 'src/api/dashboard');
const RUST = fs.readFileSync(path.join(REPO, 'src/api/dashboard.rs'), 'utf8');
const HTML = fs.readFileSync(path.join(DIR, 'index.html'), 'utf8');

// ASSETS entries: ("name", "content type", include_str!("dashboard/file")).
const ENTRIES = [...RUST.matchAll(/\(\s*"([^"]+)",\s*"([^"]+)",\s*include_str!\("dashboard\/([^"]+)"\),?\s*\)/g)]
  .map(([, name, type, file]) => ({ name, type, file }));
const SERVED = new Set(ENTRIES.map((e) => e.name));
const MODULES = fs.readdirSync(DIR).filter((f) => f.endsWith('.js'));

function importsOf(file) {
  const src = fs.readFileSync(path.join(DIR, file), 'utf8');
  return [...src.matchAll(/^\s*(?:import|export)\s[^;]*?from\s+'([^']+)'/gms)].map((m) => m[1]);
}

test('ASSETS: its declared length, names matching files, content types', () => {
  const declared = Number(RUST.match(/const ASSETS: \[\(&str, &str, &str\); (\d+)\]/)[1]);
  assert.equal(ENTRIES.length, declared, 'the array type counts its entries');
  assert.equal(SERVED.size, ENTRIES.length, 'no name twice');
  for (const e of ENTRIES) {
    assert.equal(e.name, e.file, `${e.name} is served from the file of its name`);
    assert.ok(fs.existsSync(path.join(DIR, e.file)), `${e.file} exists (include_str! would fail)`);
    const want = e.name.endsWith('.js') ? 'text/javascript; charset=utf-8' : e.name.endsWith('.css') ? 'text/css; charset=utf-8' : null;
    assert.equal(e.type, want, `${e.name}'s content type`);
  }
});

test('every module and stylesheet in the dashboard directory is served', () => {
  const files = fs.readdirSync(DIR, { recursive: true }).map(String)
    .filter((f) => /\.(js|css)$/.test(f)).map((f) => f.split(path.sep).join('/'));
  for (const f of files) assert.ok(SERVED.has(f), `${f} is in ASSETS`);
  assert.ok(!SERVED.has('app.js'), 'the old single script is gone');
});

test('index.html: loads main.js as a module after uPlot, everything from /assets/, nothing inline', () => {
  const refs = [...HTML.matchAll(/(?:src|href)="\/assets\/([^"]+)"/g)].map((m) => m[1]);
  for (const r of refs) assert.ok(SERVED.has(r), `/assets/${r} is served`);
  const scripts = [...HTML.matchAll(/<script\b([^>]*)>/g)].map((m) => m[1]);
  assert.ok(scripts.every((attrs) => /\ssrc="/.test(attrs)), 'no inline script (the CSP forbids it)');
  const mainAt = HTML.indexOf('<script type="module" src="/assets/main.js">');
  const uplotAt = HTML.indexOf('src="/assets/vendor/uPlot.iife.min.js" defer');
  assert.ok(mainAt > 0 && uplotAt > 0 && uplotAt < mainAt, 'uPlot (deferred) runs before the module');
  const markup = HTML.replace(/<!--[\s\S]*?-->/g, '');
  assert.doesNotMatch(markup, /<style|\sstyle="/, 'no inline styles (the CSP forbids them)');
});

test('every import is relative, ends in .js and names a served module', () => {
  for (const file of MODULES) {
    for (const spec of importsOf(file)) {
      assert.match(spec, /^\.\/[\w-]+\.js$/, `${file} imports ${spec}`);
      assert.ok(SERVED.has(spec.slice(2)), `${file} imports ${spec}, which is served`);
    }
  }
});

test('the ids the scripts look up exist in index.html', () => {
  const ids = new Set([...HTML.matchAll(/\sid="([^"]+)"/g)].map((m) => m[1]));
  for (const file of MODULES) {
    const src = fs.readFileSync(path.join(DIR, file), 'utf8');
    for (const [, id] of src.matchAll(/\$\('([\w-]+)'\)/g)) assert.ok(ids.has(id), `#${id} (from ${file})`);
  }
  // Per-type markup is drawn from the server's types (/event-types), not written in the page.
  const markup = HTML.replace(/<!--[\s\S]*?-->/g, '');
  assert.doesNotMatch(markup, /traffic|weather|incident|construction/i, 'no event type written in index.html');
  assert.doesNotMatch(fs.readFileSync(path.join(DIR, 'app.css'), 'utf8'), /traffic|weather|incident|construction/i,
    'no event type written in app.css');
  for (const id of ['window-grid-head', 'window-types-note', 'history-charts', 'history-types-note']) {
    assert.ok(ids.has(id), `#${id}`);
  }
});

test('no module writes markup from strings (type names and cities are the server\'s text)', () => {
  for (const file of MODULES) {
    const src = fs.readFileSync(path.join(DIR, file), 'utf8');
    assert.doesNotMatch(src, /innerHTML|outerHTML|insertAdjacentHTML|document\.write/, file);
  }
});

// Modules whose code is rules, not rendering: they must not even import a DOM module.
const PURE = ['constants.js', 'format.js', 'windows.js', 'cities.js', 'alerts.js', 'history.js', 'api.js', 'live.js'];
const DOM_MODULES = ['dom.js', 'panels.js', 'sinks.js', 'charts.js', 'history-view.js', 'main.js'];

test('the pure modules import no DOM module, directly or not', () => {
  for (const start of PURE) {
    const seen = new Set();
    const walk = (f) => {
      if (seen.has(f)) return;
      seen.add(f);
      importsOf(f).forEach((s) => walk(s.slice(2)));
    };
    walk(start);
    for (const f of DOM_MODULES) assert.ok(!seen.has(f), `${start} reaches ${f}`);
  }
});

test('every module but main.js imports in node, without a document', async () => {
  assert.equal(typeof globalThis.document, 'undefined');
  for (const file of MODULES.filter((f) => f !== 'main.js')) {
    const mod = await import(pathToFileURL(path.join(DIR, file)).href);
    assert.ok(Object.keys(mod).length > 0, `${file} exports something`);
  }
});
