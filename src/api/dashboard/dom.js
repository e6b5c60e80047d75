// Small DOM helpers. They touch the document only when called.

import { SEVERITIES } from './constants.js';
import { fmtClock } from './format.js';

export const $ = (id) => document.getElementById(id);

/** A new element with an optional class and text. */
export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  return node;
}

/** A <time> showing the clock time of an RFC 3339 instant, the instant itself on hover. */
export function timeEl(iso) {
  const node = el('time', null, fmtClock(Date.parse(iso)));
  node.dateTime = iso;
  node.title = iso;
  return node;
}

/** A severity badge: a colour and, always, the word. */
export function sevBadge(severity) {
  const known = SEVERITIES.includes(severity) ? severity : 'unknown';
  return el('span', `sev sev-${known}`, String(severity).toUpperCase());
}

/** Sets the text of every element with class `className`. */
export function setTextAll(className, text) {
  for (const node of document.getElementsByClassName(className)) node.textContent = text;
}
