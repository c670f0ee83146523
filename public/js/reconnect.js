// Reconnecting: what both transports (transport.js, the WebSocket; segment-transport.js,
// HTTP segments) do when a connection ends. They try again after a backoff that doubles
// per failed attempt up to a cap (with jitter, so that the viewers of a relay that
// restarted do not all come back at the same moment), never sooner than the close's own
// floor (a full relay, a late segment), and never after the relay refused the
// credentials. A transport extends ReconnectingTransport with its own connect() and drop().

/** src/protocol.ts CLOSE_REASONS.unauthorized.ws (HTTP 401): the stream needs a token or a signed link, and none came. */
export const CLOSE_NEEDS_CREDENTIALS = 4401;
/** CLOSE_REASONS.forbidden.ws and .expired.ws (HTTP 403): wrong token, bad signature, or the link has expired. */
export const CLOSE_CREDENTIALS_REFUSED = 4403;

/**
 * Closes after which trying again with the same URL cannot work: the credentials are
 * missing, wrong or expired. Retrying would only hammer the relay (and count as guesses).
 * @param {number} code
 */
export const isRefusal = (code) => code === CLOSE_NEEDS_CREDENTIALS || code === CLOSE_CREDENTIALS_REFUSED;

export const BACKOFF_DEFAULTS = {
  /** First retry delay; doubles per failed attempt up to maxDelayMs (with +-25 % jitter). */
  baseDelayMs: 250,
  maxDelayMs: 5000,
};

export class ReconnectingTransport {
  /**
   * @param {{
   *   onClose?: (info: { code: number, reason: string, retryInMs: number }) => void,
   *   onRefused?: (info: { code: number, reason: string }) => void,
   * }} handlers
   * @param {typeof BACKOFF_DEFAULTS} options
   */
  constructor(handlers, options) {
    this.handlers = handlers;
    this.options = options;
    /** Failed attempts since the last connection that delivered a stream. */
    this.failures = 0;
    /** Connections that opened after the first one did. */
    this.reconnects = 0;
    /** Connection attempts after the first one, successful or not. */
    this.retries = 0;
    this.connections = 0;
    this.opened = 0;
    this.stopped = true;
    this.retryTimer = 0;
  }

  /** Opens a new connection: the transport's own. */
  connect() {
    throw new Error('connect() is the transport\'s own');
  }

  /** Ends the current connection without a retry: the transport's own. */
  drop() {}

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.drop();
  }

  /** Ends the current connection (if any) and connects again after `delayMs`: used to recover from a media error. */
  restart(delayMs = 0) {
    if (this.stopped) return;
    clearTimeout(this.retryTimer);
    this.drop();
    if (delayMs > 0) this.retryTimer = setTimeout(() => this.connect(), delayMs);
    else this.connect();
  }

  /** A connection attempt begins. */
  countAttempt() {
    if (this.connections > 0) this.retries++;
    this.connections++;
  }

  /** The attempt reached the relay. */
  countOpened() {
    if (this.opened > 0) this.reconnects++;
    this.opened++;
  }

  /** The connection got as far as a stream: the next failure starts the backoff over. */
  worked() {
    this.failures = 0;
  }

  /** The connection ended: try again, unless the relay refused the credentials. @param {number} code @param {string} reason */
  closed(code, reason) {
    if (this.stopped) return;
    if (isRefusal(code)) {
      // The same request again cannot succeed: say why and stop.
      this.stopped = true;
      clearTimeout(this.retryTimer);
      this.handlers.onRefused?.({ code, reason });
      return;
    }
    this.retry(code, reason);
  }

  /** Connects again after the backoff, and says when. @param {number} code @param {string} reason */
  retry(code, reason) {
    if (this.stopped) return;
    const { baseDelayMs, maxDelayMs } = this.options;
    let delay = Math.min(maxDelayMs, baseDelayMs * 2 ** this.failures);
    delay *= 0.75 + Math.random() * 0.5;
    delay = Math.max(delay, this.leastRetryDelayMs(code));
    this.failures++;
    this.handlers.onClose?.({ code, reason, retryInMs: Math.round(delay) });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  /** How long the relay asks to be left alone after a close with this code: the transport's own. @param {number} _code */
  leastRetryDelayMs(_code) {
    return 0;
  }
}
