// Names shared by the dashboard's modules, and the rules for the event types. Pure: nothing
// here touches the DOM.

/** Where the public API lives; the page reads nothing else. */
export const API = '/api/v1';

// ---------- event types ----------
//
// The event types are the server's `--event-types`, read once from GET /api/v1/event-types
// ({"event_types": [...]}, 1 to 64 names of 1 to 32 of a-z 0-9 - _, in the server's order).
// The functions below take the list as a parameter; main.js holds the list read.

/** The seed's event types: the server's default, and the page's when /event-types cannot be read. */
export const SEED_TYPES = Object.freeze(['traffic', 'weather', 'incident', 'construction']);

/** Most event types the server may configure. */
export const MAX_EVENT_TYPES = 64;

/** Most event types shown in one table or one set of charts; the rest are left out, with a note. */
export const MAX_SHOWN_TYPES = 16;

/** An event type's name, as the server allows it. */
export const EVENT_TYPE_NAME = /^[a-z0-9_-]{1,32}$/;

/**
 * Reads the body of /event-types into the list of names, in the server's order. Throws when the
 * body does not fit the contract (the caller then falls back to SEED_TYPES): names are text from
 * the server, and only names of the allowed form, at most 64, none twice, are taken.
 */
export function parseEventTypes(body) {
  const list = body?.event_types;
  if (!Array.isArray(list) || list.length === 0) throw new Error('the server lists no event types');
  if (list.length > MAX_EVENT_TYPES) throw new Error(`${list.length} event types, at most ${MAX_EVENT_TYPES} expected`);
  for (const name of list) {
    if (typeof name !== 'string' || !EVENT_TYPE_NAME.test(name)) {
      throw new Error(`an event type the page cannot read: ${JSON.stringify(name).slice(0, 40)}`);
    }
  }
  if (new Set(list).size !== list.length) throw new Error('an event type listed twice');
  return [...list];
}

/** The types a table or a set of charts shows: the first MAX_SHOWN_TYPES, in order. */
export function shownTypes(types, max = MAX_SHOWN_TYPES) {
  return types.slice(0, max);
}

/** The note shown where types were left out ('' when all are shown). */
export function typesNote(types, max = MAX_SHOWN_TYPES) {
  return types.length > max ? `The first ${max} of ${types.length} event types.` : '';
}

/** A type's heading: its name with a capital and spaces for underscores ('power_outage' → 'Power outage'). */
export function typeLabel(type) {
  const words = String(type).replace(/_/g, ' ');
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/** The severities, mildest first. */
export const SEVERITIES = ['low', 'medium', 'high', 'critical'];

/** The severities that make an event an alert. */
export const ALERT_SEVERITIES = ['high', 'critical'];

/** One letter per severity, for the compact severity mix. */
export const SEV_LETTER = { low: 'L', medium: 'M', high: 'H', critical: 'C' };

export const SECOND_MS = 1000;
export const MINUTE_MS = 60 * SECOND_MS;
export const HOUR_MS = 60 * MINUTE_MS;
export const DAY_MS = 24 * HOUR_MS;
