// Which cities the page shows. Pure.

/** True when two lists hold the same items in the same order. */
export function sameList(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * The `n` cities with the most stored events (ties by name), sorted by name, so that colours
 * stay put while the set does. `cities` holds `/cities` items ({city, total_events}).
 */
export function topCities(cities, n) {
  return [...cities]
    .sort((a, b) => b.total_events - a.total_events || a.city.localeCompare(b.city))
    .slice(0, n)
    .map((c) => c.city)
    .sort((a, b) => a.localeCompare(b));
}

/** The cities on the chart and in the grid: the top ones, then those the user added. */
export function trackedCities(top, picked) {
  return [...top, ...picked.filter((c) => !top.includes(c))];
}
