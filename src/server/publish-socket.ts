import type http from 'node:http';
import type { Socket } from 'node:net';
import { Readable } from 'node:stream';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import { logger } from '../log.js';
import { PUBLISH_CLOSE_REASONS, PUBLISH_PROTOCOL, PUBLISH_TOKEN_PROTOCOL_PREFIX, type PublishCloseReason, type PublishingMessage } from '../protocol.js';
import type { Stream } from '../stream/stream.js';
import { webSocketOriginAllowed, type AccessGate } from './access.js';

const log = logger('publish');

/** A publisher that has not presented its token by then is closed. */
const AUTH_TIMEOUT_MS = 10_000;
const STATUS_INTERVAL_MS = 2000;
/** A publisher whose connection died without a close (a laptop's Wi-Fi) frees the stream after at most two of these. */
const PING_INTERVAL_MS = 5000;

const close = (ws: WebSocket, reason: PublishCloseReason, detail = '') => {
  const { ws: code, text } = PUBLISH_CLOSE_REASONS[reason];
  // A close reason is at most 123 bytes.
  ws.close(code, Buffer.from(detail ? `${text}: ${detail}` : text).subarray(0, 123).toString());
};

/**
 * WebSocket `/<name>/publish`: a browser (the publish page) or any client that sends
 * live WebM as binary messages. Once its token checks out it becomes the stream's
 * producer, through the same splitter and normalizer as every other; a publisher that
 * reconnects is a producer restart (timestamps continue). One server per stream, so
 * that each has its own message limit, the stream's max-element-size.
 */
export class PublishSockets {
  private readonly servers = new Map<string, WebSocketServer>();

  constructor(private readonly gate: AccessGate) {}

  upgrade(stream: Stream, req: http.IncomingMessage, socket: Socket, head: Buffer): void {
    // Browsers apply no CORS to WebSockets: without this, any site could have its
    // visitors' browsers guess the token, each from an address of its own.
    if (!webSocketOriginAllowed(stream.config.access, req)) {
      stream.accessFailures.publish++;
      log.warn(`${stream.name}: publish websocket from ${req.socket.remoteAddress}: refused, origin ${req.headers.origin} is neither the relay's nor in allow-origins`);
      socket.end('HTTP/1.1 403 Forbidden\r\nConnection: close\r\nCache-Control: no-store\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    let wss = this.servers.get(stream.name);
    if (!wss) {
      wss = new WebSocketServer({
        noServer: true,
        maxPayload: stream.config.limits.maxElementBytes,
        perMessageDeflate: false,
        // Only the protocol's name goes back: the token offered beside it is never echoed.
        handleProtocols: (protocols) => (protocols.has(PUBLISH_PROTOCOL) ? PUBLISH_PROTOCOL : false),
      });
      this.servers.set(stream.name, wss);
    }
    wss.handleUpgrade(req, socket, head, (ws) => void this.serve(stream, ws, req));
  }

  private async serve(stream: Stream, ws: WebSocket, req: http.IncomingMessage): Promise<void> {
    const address = req.socket.remoteAddress ?? '?';
    const label = `websocket ${address}:${req.socket.remotePort}`;
    ws.on('error', (error: Error & { code?: string }) => {
      if (error.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') {
        log.warn(`${stream.name}: ${label}: a message over max-element-size (${stream.config.limits.maxElementBytes} bytes): closed`);
      } else {
        log.info(`${stream.name}: ${label}: ${error.message}`);
      }
    });
    if (!stream.config.publishToken) return close(ws, 'notPublishable');

    // Media that arrives while the token is checked (after ?token=) is kept: it is the
    // start of the stream. Bounded: one message limit's worth, the check takes moments.
    const early: Buffer[] = [];
    let earlyBytes = 0;
    const keepEarly = (data: RawData, isBinary: boolean) => {
      if (!isBinary) return;
      const chunk = toBuffer(data);
      earlyBytes += chunk.length;
      if (earlyBytes > stream.config.limits.maxElementBytes) return close(ws, 'tooLarge', 'media before the token was checked');
      early.push(chunk);
    };
    const givenToken = protocolToken(req) ?? new URL(req.url ?? '/', 'http://relay').searchParams.get('token');
    if (givenToken !== null) ws.on('message', keepEarly);
    const token = givenToken ?? (await firstMessageToken(ws));
    if (ws.readyState !== ws.OPEN) return;
    const verdict = await this.gate.publisher(stream, token, address, 'publish websocket');
    if (!verdict.ok) return close(ws, verdict.refusal);
    if (ws.readyState !== ws.OPEN) return;

    const input = new Readable({ read() {} });
    const accepted = stream.attach(input, label, (rejection) => close(ws, rejection.status === 415 ? 'unplayable' : 'invalid', rejection.message));
    if (!accepted) return close(ws, 'busy');

    let bytesIn = 0;
    const status = () => {
      const message: PublishingMessage = { type: 'publishing', viewers: stream.hub.watching, bytesIn };
      ws.send(JSON.stringify(message));
    };
    const push = (data: Buffer) => {
      bytesIn += data.length;
      input.push(data);
    };
    ws.off('message', keepEarly);
    for (const chunk of early.splice(0)) push(chunk);
    ws.on('message', (data: RawData, isBinary: boolean) => {
      if (isBinary) push(toBuffer(data));
    });
    let alive = true;
    ws.on('pong', () => (alive = true));
    const timers = [
      setInterval(status, STATUS_INTERVAL_MS),
      setInterval(() => {
        if (!alive) return ws.terminate();
        alive = false;
        ws.ping();
      }, PING_INTERVAL_MS),
    ];
    ws.once('close', () => {
      for (const timer of timers) clearInterval(timer);
      input.push(null);
      input.destroy();
    });
    status();
  }

  close(): void {
    for (const wss of this.servers.values()) {
      for (const ws of wss.clients) close(ws, 'shutdown');
      wss.close();
    }
  }
}

/** The token offered as a subprotocol, `webm-relay.token.<base64url>`, or null. */
function protocolToken(req: http.IncomingMessage): string | null {
  const header = req.headers['sec-websocket-protocol'];
  if (typeof header !== 'string') return null;
  for (const protocol of header.split(',')) {
    const item = protocol.trim();
    if (item.startsWith(PUBLISH_TOKEN_PROTOCOL_PREFIX)) return Buffer.from(item.slice(PUBLISH_TOKEN_PROTOCOL_PREFIX.length), 'base64url').toString('utf8');
  }
  return null;
}

/** Waits for the first message, `{"type":"auth","token":...}`. Null: something else came, or nothing. */
function firstMessageToken(ws: WebSocket): Promise<string | null> {
  return new Promise((resolve) => {
    const done = (token: string | null) => {
      clearTimeout(timer);
      ws.off('message', onMessage);
      ws.off('close', onClose);
      resolve(token);
    };
    const onMessage = (data: RawData, isBinary: boolean) => {
      if (isBinary) return done(null);
      let message: { type?: unknown; token?: unknown };
      try {
        message = JSON.parse(toBuffer(data).toString('utf8')) as typeof message;
      } catch {
        return done(null);
      }
      done(message.type === 'auth' && typeof message.token === 'string' ? message.token : null);
    };
    const onClose = () => done(null);
    const timer = setTimeout(() => done(null), AUTH_TIMEOUT_MS);
    ws.on('message', onMessage);
    ws.once('close', onClose);
  });
}

function toBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}
