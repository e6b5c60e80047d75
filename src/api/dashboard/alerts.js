// The alert feed's rules: which alerts are kept, in which order, which are shown. Pure.
// Alerts are kept in a Map from event_id to the alert with its time parsed once (`at`).

/** Alerts shown in the feed at most. */
export const MAX_FEED_ITEMS = 200;
/** Alerts remembered at most (trimmed in steps of TRIM_SLACK). */
export const MAX_ALERTS_KEPT = 1000;
export const TRIM_SLACK = 100;

/** Newest event time first; ties by event id, descending (the API's order). */
export function byTimeDesc(a, b) {
  return b.at - a.at || (b.event_id < a.event_id ? -1 : b.event_id > a.event_id ? 1 : 0);
}

/** Remembers an alert; false when it was known already (the REST list and the stream overlap). */
export function rememberAlert(alerts, a) {
  if (alerts.has(a.event_id)) return false;
  alerts.set(a.event_id, { ...a, at: Date.parse(a.timestamp) });
  return true;
}

/**
 * Keeps the newest `max` alerts once there are more than `max + slack`, so that a busy feed does
 * not sort on every alert. Returns the map to keep (the same one when nothing was trimmed).
 */
export function trimAlerts(alerts, max = MAX_ALERTS_KEPT, slack = TRIM_SLACK) {
  if (alerts.size <= max + slack) return alerts;
  const keep = [...alerts.values()].sort(byTimeDesc).slice(0, max);
  return new Map(keep.map((a) => [a.event_id, a]));
}

/** Whether an alert passes the feed's filter ({city, severity}, '' meaning any). */
export function alertMatches(a, filter) {
  const { city, severity } = filter;
  return (!city || a.city === city) && (!severity || a.severity === severity);
}

/** The alerts the feed shows, newest first. */
export function feedAlerts(alerts, filter, max = MAX_FEED_ITEMS) {
  return [...alerts.values()].filter((a) => alertMatches(a, filter)).sort(byTimeDesc).slice(0, max);
}

/**
 * Whether a new alert can simply go on top of the feed, whose first item is `top` (an alert or
 * undefined): it can unless it sorts after the top (it came out of order).
 */
export function goesOnTop(alert, top) {
  return !top || byTimeDesc(alert, top) <= 0;
}
