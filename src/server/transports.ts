import type { ServerResponse } from 'node:http';
import type { WebSocket } from 'ws';
import type { ViewerTransport } from '../hub/hub.js';
import type { InitSegment } from '../normalizer/init-segment.js';

/** `GET /live.webm`: one long chunked response. A `<video>` cannot take a second header. */
export class HttpTransport implements ViewerTransport {
  readonly kind = 'http';

  constructor(private readonly response: ServerResponse) {}

  send(data: Buffer): void {
    this.response.write(data);
  }

  get pendingBytes(): number {
    return this.response.writableLength;
  }

  sendInit(init: InitSegment, replacing: boolean): boolean {
    if (replacing) return false;
    this.response.write(init.bytes);
    return true;
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
