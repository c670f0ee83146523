// Transport: the segments of a stream over plain HTTP, for when a cache (Varnish, a CDN)
// stands between the relay and the viewers, or a proxy drops WebSocket upgrades.
// Same handlers as LiveTransport in transport.js; knows nothing about media.
//
//   GET <base>index.json   {"epoch","init","segments":[...],"partial":{"seq","url","start"},"mimeType","tracks",...}
//   GET <base><epoch>/init.webm
//   GET <base><epoch>/<seq>.webm   immutable; the one being produced streams as it is made,
//                                  the next one is held by the relay until it starts.
//
// Segment N's body is read as it arrives and handed on chunk by chunk; segment N+1 is
// requested as soon as N's response begins (after hls.js's fragment loader), so the
// next segment is always already waiting at the relay or the cache, never a round trip away.

import { BACKOFF_DEFAULTS, CLOSE_CREDENTIALS_REFUSED, CLOSE_NEEDS_CREDENTIALS, ReconnectingTransport } from './reconnect.js';

const DEFAULTS = {
  ...BACKOFF_DEFAULTS,
  /** No byte of media for this long: the request is dead, start over. */
  silenceTimeoutMs: 8000,
  /** How often the silence check runs. */
  checkIntervalMs: 1000,
};

/** Why a connection ended, as `onClose` reports it (the code is for the player's messages). */
export const SEGMENTS_CLOSE = {
  /** index.json or a segment answered 503: the stream is not live, or its next segment is late. */
  NOT_LIVE: 4503,
  /** A segment answered 404: the stream restarted with other tracks, or we fell out of the window. */
  GONE: 4404,
  /** The request failed (network, a cache that went away). */
  NETWORK: 4000,
  /** Nothing arrived for silenceTimeoutMs. */
  SILENT: 4001,
  /** The tab came back from the background far behind live. */
  BEHIND: 4002,
  /** 401: the stream needs a token or a signed link (the WebSocket's 4401). */
  NEEDS_CREDENTIALS: CLOSE_NEEDS_CREDENTIALS,
  /** 403: wrong token, bad signature or an expired link (the WebSocket's 4403). */
  CREDENTIALS_REFUSED: CLOSE_CREDENTIALS_REFUSED,
};

class SegmentError extends Error {
  /** @param {number} code @param {string} message */
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

export class SegmentTransport extends ReconnectingTransport {
  /**
   * @param {string} base URL of the stream's directory, ending with `/` (e.g. `/live/`): index.json is there
   * @param {{
   *   onOpen?: () => void,
   *   onStream: (description: any) => void,
   *   onInit: (bytes: ArrayBuffer) => void,
   *   onMedia: (bytes: ArrayBuffer) => void,
   *   onPong?: (message: any) => void,
   *   onClose?: (info: { code: number, reason: string, retryInMs: number }) => void,
   *   onRefused?: (info: { code: number, reason: string }) => void,
   * }} handlers
   * @param {Partial<typeof DEFAULTS>} options
   */
  constructor(base, handlers, options = {}) {
    super(handlers, { ...DEFAULTS, ...options });
    this.kind = 'segments';
    this.base = base;
    /** A protected stream's credentials (?token=, or ?exp=&sig=), on every request: the relay checks each one. */
    this.credentials = new URL(base, location.href).searchParams;
    this.bytesReceived = 0;
    /** Segments received whole. */
    this.segmentsReceived = 0;
    /** The segment being read now (null before the first). */
    this.segment = /** @type {number | null} */ (null);
    this.epoch = /** @type {string | null} */ (null);
    this.lastDataAt = 0;
    this.checkTimer = 0;
    /** Aborts every request of the current connection. */
    this.abort = /** @type {AbortController | null} */ (null);
    this.onVisible = () => {
      if (document.visibilityState === 'visible') void this.catchUp();
    };
  }

  /** @param {{ socket: WebSocket }} [early] a WebSocket the page opened for the other transport: not needed here */
  start(early) {
    early?.socket.close();
    this.stopped = false;
    document.addEventListener('visibilitychange', this.onVisible);
    this.connect();
  }

  stop() {
    document.removeEventListener('visibilitychange', this.onVisible);
    super.stop();
  }

  /** The WebSocket's ping has no counterpart here. */
  send() {}

  connect() {
    this.countAttempt();
    const abort = new AbortController();
    this.abort = abort;
    this.lastDataAt = performance.now();
    clearInterval(this.checkTimer);
    this.checkTimer = setInterval(() => this.checkSilence(), this.options.checkIntervalMs);
    this.run(abort.signal).catch((/** @type {any} */ error) => {
      if (this.abort !== abort) return; // dropped on purpose
      this.drop();
      const code = error instanceof SegmentError ? error.code : SEGMENTS_CLOSE.NETWORK;
      this.closed(code, error?.message ?? String(error));
    });
  }

  /** One connection: index, init, then segments until something fails. @param {AbortSignal} signal */
  async run(signal) {
    const index = await this.fetchIndex(signal);
    this.countOpened();
    this.handlers.onOpen?.();
    this.epoch = index.epoch;
    /** @type {import('../../src/protocol.js').StreamMessage} */
    const description = { type: 'stream', name: this.name(), mimeType: index.mimeType, tracks: index.tracks, version: 0 };
    this.handlers.onStream(description);
    const indexUrl = new URL('index.json', new URL(this.base, location.href));
    const init = await this.get(new URL(index.init, indexUrl).href, signal);
    const initBytes = await init.arrayBuffer();
    this.bytesReceived += initBytes.byteLength;
    this.handlers.onInit(initBytes);
    // The segment being produced starts at a keyframe: the live edge with a picture at once.
    let seq = index.partial.seq;
    let response = this.get(this.segmentUrl(indexUrl, seq), signal);
    for (;;) {
      this.segment = seq;
      const current = await response;
      // Ask for the next one now: the relay (or the cache) holds it until it starts.
      response = this.get(this.segmentUrl(indexUrl, seq + 1), signal);
      // An unread response must not count as a failure of the one we are reading.
      response.catch(() => {});
      await this.readBody(current);
      this.segmentsReceived++;
      // A whole segment read: the connection works.
      this.worked();
      seq++;
    }
  }

  /** The stream's name: the last part of the base URL. */
  name() {
    return new URL(this.base, location.href).pathname.split('/').filter(Boolean).pop() ?? '';
  }

  /** @param {URL} indexUrl @param {number} seq */
  segmentUrl(indexUrl, seq) {
    return new URL(`${this.epoch}/${seq}.webm`, indexUrl).href;
  }

  /** @param {AbortSignal} signal @returns {Promise<import('../../src/protocol.js').SegmentIndex>} */
  async fetchIndex(signal) {
    // Its max-age=0 makes the browser ask every time, without the no-cache request
    // headers that cache: 'no-store' would add (a CDN may honour them and skip its cache).
    const response = await this.get(new URL('index.json', new URL(this.base, location.href)).href, signal);
    return response.json();
  }

  /** @param {string} url @param {AbortSignal} signal */
  async get(url, signal) {
    const target = new URL(url);
    for (const [key, value] of this.credentials) target.searchParams.set(key, value);
    const response = await fetch(target.href, { signal });
    if (response.ok) return response;
    const what = url.endsWith('index.json') ? 'index.json' : `segment ${url.split('/').pop()}`;
    if (response.status === 401 || response.status === 403) {
      // The relay's text says which (e.g. "the link has expired"); shown, never inspected.
      const text = (await response.text().catch(() => '')).trim();
      throw new SegmentError(response.status === 401 ? SEGMENTS_CLOSE.NEEDS_CREDENTIALS : SEGMENTS_CLOSE.CREDENTIALS_REFUSED, text || `${what}: HTTP ${response.status}`);
    }
    if (response.status === 503) throw new SegmentError(SEGMENTS_CLOSE.NOT_LIVE, `${what}: not available yet (503)`);
    if (response.status === 404) throw new SegmentError(SEGMENTS_CLOSE.GONE, `${what}: gone (404)`);
    throw new SegmentError(SEGMENTS_CLOSE.NETWORK, `${what}: HTTP ${response.status}`);
  }

  /** Hands the body on as it arrives. @param {Response} response */
  async readBody(response) {
    if (!response.body) throw new SegmentError(SEGMENTS_CLOSE.NETWORK, 'a response without a body');
    const reader = response.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      this.lastDataAt = performance.now();
      this.bytesReceived += value.byteLength;
      const bytes = value.byteOffset === 0 && value.byteLength === value.buffer.byteLength ? value.buffer : value.slice().buffer;
      this.handlers.onMedia(bytes);
    }
  }

  checkSilence() {
    if (performance.now() - this.lastDataAt <= this.options.silenceTimeoutMs) return;
    this.drop();
    this.retry(SEGMENTS_CLOSE.SILENT, 'no data from the relay');
  }

  /** Back from the background: if the stream went on without us, start again at its live edge. */
  async catchUp() {
    if (this.stopped || this.segment === null || !this.abort) return;
    try {
      const index = await this.fetchIndex(this.abort.signal);
      if (index.epoch !== this.epoch || index.partial.seq > this.segment + 1) {
        this.drop();
        this.handlers.onClose?.({ code: SEGMENTS_CLOSE.BEHIND, reason: 'back from the background: to the live edge', retryInMs: 0 });
        this.connect();
      }
    } catch {
      // The running connection reports its own failures.
    }
  }

  /** Cancels every request of the current connection without a retry. */
  drop() {
    clearInterval(this.checkTimer);
    const abort = this.abort;
    this.abort = null;
    abort?.abort();
  }

  /** The relay says when: Retry-After is a second for a late segment. @param {number} code */
  leastRetryDelayMs(code) {
    return code === SEGMENTS_CLOSE.NOT_LIVE ? 1000 : 0;
  }
}
