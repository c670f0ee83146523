import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { WebSocket } from 'ws';
import type { ViewerTransport } from '../hub/hub.js';
import type { InitSegment } from '../normalizer/init-segment.js';

const CRLF_LENGTH = 2;

/**
 * Chunked framing (`SIZE\r\n DATA \r\n`) in one Buffer, made once per chunk: the hub
 * sends the same Buffer to every viewer, so every viewer gets the same framed Buffer
 * too (and a GOP replayed to a joining viewer is framed once, not once per viewer).
 */
const framedChunks = new WeakMap<Buffer, Buffer>();
let lastData: Buffer | null = null;
let lastFramed: Buffer | null = null;

function framed(data: Buffer): Buffer {
  if (data === lastData) return lastFramed!;
  let frame = framedChunks.get(data);
  if (!frame) {
    const head = `${data.length.toString(16)}\r\n`;
    frame = Buffer.allocUnsafe(head.length + data.length + CRLF_LENGTH);
    frame.write(head, 0, 'latin1');
    data.copy(frame, head.length);
    frame[frame.length - 2] = 0x0d;
    frame[frame.length - 1] = 0x0a;
    framedChunks.set(data, frame);
  }
  lastData = data;
  lastFramed = frame;
  return frame;
}

/**
 * `GET /live.webm`: one long chunked response. A `<video>` cannot take a second header.
 *
 * Once the response head is out, media goes straight to the socket: one write per
 * chunk, framed once for all viewers, instead of `res.write()`'s three writes (size
 * line, data, CRLF) and its per-call bookkeeping for every viewer.
 */
export class HttpTransport implements ViewerTransport {
  readonly kind = 'http';
  /** Set once the head is sent and the socket is this response's alone. */
  private socket: Socket | null = null;
  private chunked = true;

  constructor(private readonly response: ServerResponse) {}

  send(data: Buffer): void {
    const socket = this.socket ?? this.takeSocket();
    if (!socket) this.response.write(data);
    else if (this.chunked) socket.write(framed(data));
    else socket.write(data);
  }

  get pendingBytes(): number {
    return this.socket ? this.socket.writableLength : this.response.writableLength;
  }

  sendInit(init: InitSegment, replacing: boolean): boolean {
    if (replacing) return false;
    this.send(init.bytes);
    return true;
  }

  /** Sends the head, then returns the socket if bytes may be written to it directly. */
  private takeSocket(): Socket | null {
    const response = this.response;
    if (response.writableEnded || response.destroyed) return null;
    if (!response.headersSent) response.flushHeaders();
    const socket = response.socket;
    // A response queued behind another on a kept-alive connection does not own its socket yet.
    if (!socket || (socket as Socket & { _httpMessage?: unknown })._httpMessage !== response || !socket.writable) return null;
    // HTTP/1.0 clients get a body delimited by the connection's close, unframed.
    this.chunked = response.chunkedEncoding;
    this.socket = socket;
    return socket;
  }

  close(): void {
    // A clean end of the chunked body: the player sees the stream end, not a network error.
    this.response.end();
    // A viewer that stopped reading would hold the socket open with an unsent backlog.
    setTimeout(() => this.response.destroy(), 2000).unref();
  }
}

/** The description of a stream sent, as JSON text, before each init segment. */
export interface StreamDescription {
  type: 'stream';
  mimeType: string;
  tracks: { number: number; kind: string; codec: string; width?: number; height?: number; sampleRate?: number; channels?: number }[];
}

export function describeStream(init: InitSegment): StreamDescription {
  return {
    type: 'stream',
    mimeType: init.info.mimeType,
    tracks: init.info.tracks.map((t) => ({
      number: t.number,
      kind: t.kind,
      codec: t.mseCodec ?? t.codecId,
      width: t.width,
      height: t.height,
      sampleRate: t.sampleRate,
      channels: t.channels,
    })),
  };
}

/** WebSocket `/live`: description, init segment, then media as binary messages. */
export class WebSocketTransport implements ViewerTransport {
  readonly kind = 'ws';

  constructor(private readonly socket: WebSocket) {}

  send(data: Buffer): void {
    this.socket.send(data, { binary: true });
  }

  get pendingBytes(): number {
    return this.socket.bufferedAmount;
  }

  sendInit(init: InitSegment): boolean {
    this.socket.send(JSON.stringify(describeStream(init)));
    this.socket.send(init.bytes, { binary: true });
    return true;
  }

  close(reason: string): void {
    // 1001 "going away" for shutdown; 1008 "policy" when the relay drops a stalled viewer.
    this.socket.close(reason.startsWith('stalled') ? 1008 : 1001, reason.slice(0, 120));
    setTimeout(() => this.socket.terminate(), 2000).unref();
  }
}
