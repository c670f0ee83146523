// Transport: a stream's WebSocket (/NAME) and its protocol. Knows nothing about media.
//
// The protocol is defined once, in src/protocol.ts. The relay sends, on every
// connection and again whenever the producer changes tracks:
//   text   StreamMessage {"type":"stream","name":...,"mimeType":...,"tracks":[...],"version":N,"pacing":{...}}
//   binary init segment (EBML header, Segment, Info, Tracks)
// then binary media messages (WebM Clusters, the first starting at a video keyframe).
// We may send PingMessage {"type":"ping"} and get PongMessage {"type":"pong","viewers":N,"pacing":{...}}.

/** @typedef {import('../../src/protocol.js').StreamMessage} StreamMessage */
/** @typedef {import('../../src/protocol.js').PongMessage} PongMessage */
/** @typedef {import('../../src/protocol.js').PingMessage} PingMessage */

import { BACKOFF_DEFAULTS, ReconnectingTransport } from './reconnect.js';

export { CLOSE_CREDENTIALS_REFUSED, CLOSE_NEEDS_CREDENTIALS, isRefusal } from './reconnect.js';

/** src/protocol.ts CLOSE_REASONS.full.ws: the relay already serves its maximum of viewers. */
export const CLOSE_TOO_MANY_VIEWERS = 1013;
/** CLOSE_REASONS.throttled.ws: too many failed attempts from this address. */
export const CLOSE_THROTTLED = 4429;

const DEFAULTS = {
  ...BACKOFF_DEFAULTS,
  /** When the relay is full, wait at least this long before trying again. */
  fullDelayMs: 10000,
  /** A ping this often keeps the viewer count fresh and proves the connection alive. */
  pingIntervalMs: 2000,
  /** No message at all (media or pong) for this long: the connection is dead, reconnect. */
  silenceTimeoutMs: 8000,
};

export class LiveTransport extends ReconnectingTransport {
  /**
   * @param {string} url ws:// or wss:// URL of the stream's WebSocket, /NAME
   * @param {{
   *   onOpen?: () => void,
   *   onStream: (description: StreamMessage) => void,
   *   onInit: (bytes: ArrayBuffer) => void,
   *   onMedia: (bytes: ArrayBuffer) => void,
   *   onPong?: (message: PongMessage) => void,
   *   onClose?: (info: { code: number, reason: string, retryInMs: number }) => void,
   *   onRefused?: (info: { code: number, reason: string }) => void,
   * }} handlers
   * @param {Partial<typeof DEFAULTS>} options
   */
  constructor(url, handlers, options = {}) {
    super(handlers, { ...DEFAULTS, ...options });
    this.url = url;
    /** @type {WebSocket | null} */
    this.socket = null;
    this.bytesReceived = 0;
    this.lastMessageAt = 0;
    this.expectInit = false;
    this.pingTimer = 0;
  }

  /**
   * @param {{ socket: WebSocket, messages: (string | ArrayBuffer)[], opened: boolean, closed?: { code: number, reason: string } }} [early]
   *   a socket the page opened before this module loaded, with what it received so far (and how it closed, if it did)
   */
  start(early) {
    this.stopped = false;
    this.connect(early);
  }

  /** @param {PingMessage} message */
  send(message) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(message));
  }

  /** @param {{ socket: WebSocket, messages: (string | ArrayBuffer)[], opened: boolean, closed?: { code: number, reason: string } }} [early] */
  connect(early) {
    this.countAttempt();
    if (early && early.socket.url === this.url && early.closed) {
      // The page's early socket was this first attempt, and it has ended already (a refusal comes at once).
      for (const data of early.messages.splice(0)) this.receive(data);
      this.closed(early.closed.code, early.closed.reason);
      return;
    }
    const adopt = early && early.socket.url === this.url && early.socket.readyState <= WebSocket.OPEN;
    const socket = adopt ? early.socket : new WebSocket(this.url);
    socket.binaryType = 'arraybuffer';
    this.socket = socket;
    this.expectInit = false;
    this.lastMessageAt = performance.now();

    socket.onopen = () => {
      this.countOpened();
      this.handlers.onOpen?.();
      this.send({ type: 'ping' });
      clearInterval(this.pingTimer);
      this.pingTimer = setInterval(() => this.heartbeat(), this.options.pingIntervalMs);
    };
    socket.onmessage = (event) => this.receive(event.data);
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.drop();
      this.closed(event.code, event.reason);
    };
    // An error is always followed by close; nothing to do here.
    socket.onerror = () => {};
    if (adopt) {
      if (early.opened) socket.onopen(new Event('open'));
      for (const data of early.messages.splice(0)) this.receive(data);
    }
  }

  /** @param {string | ArrayBuffer} data */
  receive(data) {
    this.lastMessageAt = performance.now();
    if (typeof data === 'string') {
      let message;
      try {
        message = JSON.parse(data);
      } catch {
        return;
      }
      if (message.type === 'stream') {
        this.expectInit = true;
        this.handlers.onStream(message);
      } else if (message.type === 'pong') {
        this.handlers.onPong?.(message);
      }
      return;
    }
    this.bytesReceived += data.byteLength;
    if (this.expectInit) {
      this.expectInit = false;
      this.worked();
      this.handlers.onInit(data);
    } else {
      this.handlers.onMedia(data);
    }
  }

  heartbeat() {
    if (performance.now() - this.lastMessageAt > this.options.silenceTimeoutMs) {
      const socket = this.socket;
      this.drop();
      if (socket) this.retry(4000, 'no data from the relay');
      return;
    }
    this.send({ type: 'ping' });
  }

  /** Forgets the current socket without triggering a reconnect from its close event. */
  drop() {
    clearInterval(this.pingTimer);
    const socket = this.socket;
    this.socket = null;
    if (!socket) return;
    socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
    if (socket.readyState === WebSocket.CONNECTING || socket.readyState === WebSocket.OPEN) socket.close();
  }

  /** A full relay, or one that throttles this address, asks for a longer wait. @param {number} code */
  leastRetryDelayMs(code) {
    return code === CLOSE_TOO_MANY_VIEWERS || code === CLOSE_THROTTLED ? this.options.fullDelayMs : 0;
  }
}
