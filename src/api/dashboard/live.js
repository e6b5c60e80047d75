// The live stream: Server-Sent Events from /api/v1/stream, kept connected. EventSource is used
// only when the stream is started: node can import this module (backoffMs is pure).

/** No message (stats come every 2 s) for this long means a dead connection. */
export const SILENCE_MS = 30000;
/** After a `reset`, reload at once, then at most this often. */
export const RESET_RELOAD_MS = 10000;

/**
 * How long to wait before connecting again after the stream was refused `retries` times in a
 * row (e.g. 503: too many streams): 3 s, 6 s, … up to a minute, times a jitter in [0.5, 1) so
 * that many pages do not come back at the same moment.
 */
export function backoffMs(retries, random = Math.random) {
  return Math.min(60000, 3000 * 2 ** retries) * (0.5 + random() / 2);
}

/**
 * Connects to the stream at `url` and keeps it connected. `handlers` maps each event name
 * (alert, window, stats, health) to a function of its parsed data. Hooks:
 * - onConnect(): a connection is being made or was just opened (what it reports is new from here);
 * - onStatus(): `status.down` changed (for the banner);
 * - reload(): snapshots must be read again: the stream was down, restarted without
 *   Last-Event-ID, or said `reset` (throttled to one every RESET_RELOAD_MS).
 * Returns `status`: {down, lastMessage (ms)}.
 */
export function startStream({ url, handlers, onConnect, onStatus, reload }) {
  const status = { down: false, lastMessage: 0 };
  let source = null;
  let errorTimer = null;
  let reconnectTimer = null;
  let needsReload = false;
  let closedRetries = 0; // how often in a row the stream was refused

  function connect() {
    onConnect();
    source = new EventSource(url);
    source.addEventListener('open', onOpen);
    source.addEventListener('error', onError);
    for (const [name, handle] of Object.entries({ ...handlers, reset: onReset })) {
      source.addEventListener(name, (e) => onMessage(e, handle));
    }
  }

  function onMessage(e, handle) {
    status.lastMessage = Date.now();
    let data;
    try {
      data = JSON.parse(e.data);
    } catch {
      return; // not ours to crash on
    }
    handle(data);
  }

  function onOpen() {
    closedRetries = 0;
    onConnect();
    clearTimeout(errorTimer);
    errorTimer = null;
    status.lastMessage = Date.now();
    const recovering = status.down || needsReload;
    status.down = false;
    needsReload = false;
    onStatus();
    if (recovering) reload();
  }

  // EventSource retries by itself (every 2 s, the server's `retry`) with Last-Event-ID, so a
  // short drop shows nothing. It gives up for good on an HTTP error status: then we start over.
  function onError() {
    if (source.readyState === EventSource.CLOSED) {
      restart(backoffMs(closedRetries));
      closedRetries += 1;
    }
    if (errorTimer) return;
    errorTimer = setTimeout(() => {
      errorTimer = null;
      if (source.readyState !== EventSource.OPEN) {
        status.down = true;
        needsReload = true;
        onStatus();
      }
    }, 1000);
  }

  // A reset means messages were lost (the server restarted, or we fell behind): reload. A
  // flooded server can send one every few seconds, so reload at once, then at most every 10 s.
  let resetTimer = null;
  let lastResetReload = 0;
  function onReset() {
    if (resetTimer) return;
    resetTimer = setTimeout(() => {
      resetTimer = null;
      lastResetReload = Date.now();
      reload();
    }, Math.max(0, lastResetReload + RESET_RELOAD_MS - Date.now()));
  }

  function restart(delay) {
    source?.close();
    needsReload = true; // a new EventSource has no Last-Event-ID: nothing will be replayed
    clearTimeout(reconnectTimer);
    reconnectTimer = setTimeout(connect, delay);
  }

  // The server sends stats and health every 2 s (slower while its store hangs: each read may
  // take seconds); silence far longer than that means a dead connection the browser has not
  // noticed, such as a half-open TCP connection.
  setInterval(() => {
    if (source?.readyState === EventSource.OPEN && Date.now() - status.lastMessage > SILENCE_MS) {
      status.down = true;
      onStatus();
      restart(0);
    }
  }, 2000);

  connect();
  return status;
}
