// Names shared by the dashboard's modules. Pure: nothing here touches the DOM.

/** Where the public API lives; the page reads nothing else. */
export const API = '/api/v1';

/** The event types, in the order the page shows them. */
export const TYPES = ['traffic', 'weather', 'incident', 'construction'];

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
