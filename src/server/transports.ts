import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { WebSocket } from 'ws';
import type { ChunkJoiner } from '../hub/batcher.js';
import type { ViewerTransport } from '../hub/viewers.js';
import { CLOSE_REASONS, type CloseReason, type StreamMessage, type StreamPacing } from '../protocol.js';
import type { VersionedInit } from '../stream/events.js';
import { describeTrackList } from '../stream/stream.js';

/**
 * Frames each media Buffer once, whoever it goes to: the hub sends the same Buffer to
 * every viewer, so every viewer gets the same framed Buffer too, written to its socket
 * in one call (and a GOP replayed to a joining viewer is framed once, not once per viewer).
 */
class FrameCache {
  private readonly frames = new WeakMap<Buffer, Buffer>();
  private lastData: Buffer | null = null;
  private lastFrame: Buffer | null = null;

  constructor(
    private readonly header: (length: number) => Buffer,
    private readonly trailer: Buffer,
  ) {}

  /**
   * Joins `parts` inside their frame and returns the data as a view of it, its frame
   * already known: framing it later costs no copy.
   */
  join(parts: readonly Buffer[], length: number): Buffer {
    const header = this.header(length);
    const frame = Buffer.allocUnsafe(header.length + length + this.trailer.length);
    let at = header.copy(frame, 0);
    for (const part of parts) at += part.copy(frame, at);
    this.trailer.copy(frame, at);
    const data = frame.subarray(header.length, at);
    this.frames.set(data, frame);
    return data;
  }

  frame(data: Buffer): Buffer {
    if (data === this.lastData) return this.lastFrame!;
    let frame = this.frames.get(data);
    if (!frame) {
      frame = Buffer.concat([this.header(data.length), data, this.trailer]);
      this.frames.set(data, frame);
    }
    this.lastData = data;
    this.lastFrame = frame;
    return frame;
  }
}

/** HTTP/1.1 chunked encoding: `SIZE\r\n DATA \r\n`. */
const httpChunks = new FrameCache((length) => Buffer.from(`${length.toString(16)}\r\n`, 'latin1'), Buffer.from('\r\n'));

/** RFC 6455 binary messages as a server sends them: FIN and opcode 2, unmasked, 7-, 16- or 64-bit length. */
const webSocketMessages = new FrameCache((length) => {
  if (length < 126) return Buffer.from([0x82, length]);
  const header = Buffer.alloc(length < 0x10000 ? 4 : 10);
  header[0] = 0x82;
  if (length < 0x10000) {
    header[1] = 126;
    header.writeUInt16BE(length, 2);
  } else {
    header[1] = 127;
    header.writeBigUInt64BE(BigInt(length), 2);
  }
  return header;
}, Buffer.alloc(0));

/**
 * The hub's chunk joiner (see ChunkJoiner): joins the parts inside the frame of the
 * transport most of the stream's viewers use, HTTP chunk or WebSocket message, and
 * returns the data as a view of it. Those viewers are then sent the frame around the
 * very bytes every other viewer gets: no second copy of each chunk, and a third less
 * Buffer memory allocated per media byte, which V8 counts against the headroom that
 * decides when it runs a full collection. Viewers of the other transport get a framed
 * copy, made once per chunk for all of them.
 */
export const joinFramed: ChunkJoiner = (parts, length, viewers) =>
  (viewers.ws > viewers.http ? webSocketMessages : httpChunks).join(parts, length);

/**
 * An EBML Void element (ID 0xEC, one byte of payload): every WebM reader skips it,
 * at Segment level and inside a Cluster alike, so it can go between any two elements.
 * Sent as one HTTP chunk of its own while the stream is idle.
 */
const KEEPALIVE_VOID = Buffer.from([0xec, 0x81, 0x00]);
const KEEPALIVE_CHUNK = Buffer.concat([Buffer.from('3\r\n'), KEEPALIVE_VOID, Buffer.from('\r\n')]);

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
  /** The init segment is out: from here on the body is a sequence of whole elements. */
  private started = false;

  constructor(private readonly response: ServerResponse) {}

  send(data: Buffer): void {
    const socket = this.socket ?? this.takeSocket();
    if (!socket) this.response.write(data);
    else if (this.chunked) socket.write(httpChunks.frame(data));
    else socket.write(data);
  }

  get pendingBytes(): number {
    return this.socket ? this.socket.writableLength : this.response.writableLength;
  }

  sendInit(init: VersionedInit, replacing: boolean): boolean {
    if (replacing) return false;
    this.send(init.segment.bytes);
    this.started = true;
    return true;
  }

  keepAlive(): void {
    // Before the init segment nothing may precede the EBML header.
    if (!this.started) return;
    const socket = this.socket ?? this.takeSocket();
    if (!socket) this.response.write(KEEPALIVE_VOID);
    else socket.write(this.chunked ? KEEPALIVE_CHUNK : KEEPALIVE_VOID);
  }

  /** Sends the head, then returns the socket if bytes may be written to it directly. */
  private takeSocket(): Socket | null {
    const response = this.response;
    if (response.writableEnded || response.destroyed) return null;
    const socket = response.socket;
    // A response queued behind another on a kept-alive connection does not own its socket
    // yet: it is written through `response`, which puts the head first.
    if (!socket || (socket as Socket & { _httpMessage?: unknown })._httpMessage !== response || !socket.writable) return null;
    // Even when `headersSent` is true: after writeHead() Node holds the head until the
    // first write, and media written straight to the socket would precede it.
    response.flushHeaders();
    // HTTP/1.0 clients get a body delimited by the connection's close, unframed.
    this.chunked = response.chunkedEncoding;
    this.socket = socket;
    return socket;
  }

  close(_reason: CloseReason): void {
    // A clean end of the chunked body: the player sees the stream end, not a network error.
    this.response.end();
    // A viewer that stopped reading would hold the socket open with an unsent backlog.
    setTimeout(() => this.response.destroy(), 2000).unref();
  }
}

export function describeStream(name: string, init: VersionedInit, pacing?: StreamPacing): StreamMessage {
  return {
    type: 'stream',
    name,
    mimeType: init.segment.info.mimeType,
    tracks: describeTrackList(init.segment.info.tracks),
    version: init.version,
    ...(pacing ? { pacing } : {}),
  };
}

/**
 * WebSocket `/<name>`: description, init segment, then media as binary messages.
 *
 * Media messages are framed once for all viewers and written straight to the socket
 * the connection was upgraded on, as HTTP chunks are, not framed per viewer by `ws`.
 * That is safe because the server negotiates no extension (no permessage-deflate),
 * so `ws` writes each of its own frames (pongs, close) whole and at once, never queued.
 */
export class WebSocketTransport implements ViewerTransport {
  readonly kind = 'ws';

  constructor(
    private readonly name: string,
    private readonly ws: WebSocket,
    private readonly socket: Socket,
    /** The stream's pacing as it is when the description goes out. */
    private readonly pacing: () => StreamPacing,
  ) {}

  send(data: Buffer): void {
    if (this.ws.readyState === this.ws.OPEN) this.socket.write(webSocketMessages.frame(data));
  }

  get pendingBytes(): number {
    return this.ws.bufferedAmount;
  }

  sendInit(init: VersionedInit): boolean {
    this.ws.send(JSON.stringify(describeStream(this.name, init, this.pacing())));
    this.ws.send(init.segment.bytes, { binary: true });
    return true;
  }

  keepAlive(): void {
    // A control frame: proxies see traffic, the player's MediaSource sees nothing.
    if (this.ws.readyState === this.ws.OPEN) this.ws.ping();
  }

  close(reason: CloseReason): void {
    const { ws, text } = CLOSE_REASONS[reason];
    this.ws.close(ws, text);
    setTimeout(() => this.ws.terminate(), 2000).unref();
  }
}
