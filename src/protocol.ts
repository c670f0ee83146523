/**
 * The relay's public shapes: WebSocket messages, close reasons and the JSON of the
 * API. Defined once here; the player (public/js) refers to them through JSDoc
 * `import('../../src/protocol.js')` types. Changing one is changing the protocol.
 */
import type { NormalizerStats } from './normalizer/normalizer.js';

/** A track as the player is told about it. */
export interface TrackDescription {
  number: number;
  kind: 'video' | 'audio' | 'other';
  /** The codec as MediaSource names it (`vp8`, `opus`, ...), or the Matroska codec ID when it has no such name. */
  codec: string;
  width?: number;
  height?: number;
  sampleRate?: number;
  channels?: number;
}

/**
 * Server to player, text: sent on every connection before the binary init segment,
 * and again (followed by a new init segment) whenever the stream's tracks change.
 * Binary messages after it are media: WebM Clusters, the first at a video keyframe.
 */
export interface StreamMessage {
  type: 'stream';
  /** The stream's name (the WebSocket path without its slash). */
  name: string;
  mimeType: string;
  tracks: TrackDescription[];
  /** Goes up by one whenever the tracks change. */
  version: number;
}

/** Server to player, text: the answer to a ping. */
export interface PongMessage {
  type: 'pong';
  /** Viewers of this stream (recounted at most once a second). */
  viewers: number;
}

export type ServerMessage = StreamMessage | PongMessage;

/** Player to server, text. Anything else is ignored; more than --ws-max-payload bytes closes with 1009. */
export interface PingMessage {
  type: 'ping';
}
export const CLIENT_MESSAGE_TYPES: ReadonlySet<string> = new Set<PingMessage['type']>(['ping']);

/**
 * Why the relay ends a viewer's connection. Code reads the reason, never the text.
 * Over HTTP the response ends (a clean end of the chunked body, or a status before
 * any media); over WebSocket the connection closes with `ws`.
 */
export const CLOSE_REASONS = {
  /** The relay is shutting down. */
  shutdown: { ws: 1001, http: 503, text: 'relay shutting down' },
  /** The producer went away and none came back within --producer-grace. */
  noProducer: { ws: 1001, http: 503, text: 'no producer' },
  /** The stream changed tracks: a `<video src>` cannot take a second header (WebSocket viewers get a new init segment instead). */
  tracksChanged: { ws: 1001, http: 503, text: 'the stream changed tracks' },
  /** The viewer took nothing for --stall-timeout. */
  stalled: { ws: 1008, http: 503, text: 'stalled: took nothing for the stall timeout' },
  /** Its backlog passed --max-queue under `--recover disconnect`. */
  tooSlow: { ws: 1008, http: 503, text: 'too slow: the backlog passed max-queue' },
  /** --max-viewers of the stream or of the relay reached. */
  full: { ws: 1013, http: 503, text: 'too many viewers' },
  /** No stream of that name. */
  unknownStream: { ws: 4404, http: 404, text: 'no such stream' },
} as const satisfies Record<string, { ws: number; http: number; text: string }>;

export type CloseReason = keyof typeof CLOSE_REASONS;

/** One stream, as `/api/streams` lists it. */
export interface StreamSummary {
  name: string;
  live: boolean;
  mimeType: string | null;
  tracks: TrackDescription[];
  viewers: number;
  /** Bits per second of media over the last few seconds. */
  bitrate: number;
  /** Seconds since the current producer's stream began, or null. */
  uptimeSeconds: number | null;
  /** Relative URLs of its pages and media. */
  urls: { player: string; webm: string; websocket: string; snapshot: string };
}

/** `/api/streams/<name>`: one stream in detail. */
export interface StreamStats {
  name: string;
  /** Connections that have taken media (not just the header). */
  viewers: number;
  /** Every open viewer connection, probes included: what max-viewers limits. */
  connections: number;
  viewersByTransport: { http: number; ws: number };
  live: boolean;
  bitrate: number;
  mimeType: string | null;
  tracks: TrackDescription[];
  uptimeSeconds: number | null;
  clusters: number;
  keyframeClusters: number;
  bytesOut: number;
  joins: number;
  rejected: number;
  skips: number;
  slowDisconnects: number;
  stallDisconnects: number;
  initSegments: number;
  ingest: {
    state: 'waiting' | 'receiving';
    producer: string | null;
    producers: number;
    refused: number;
    rejected: number;
    bytesIn: number;
  };
  /** What the normalizer had to change in the producer's stream (src/normalizer/normalizer.ts). */
  normalizer: NormalizerStats;
  encoder: { pid: number | null; restarts: number } | null;
  encoderRestarts: number;
  /** Edge: the pull from the upstream relay (null for other producers). */
  upstream: {
    url: string;
    state: 'connecting' | 'receiving';
    /** Why the last connection ended or failed, while not receiving. */
    problem: string | null;
    connects: number;
    /** Connections dropped because the upstream sent nothing for --upstream-timeout. */
    readTimeouts: number;
    sinceLastByteMs: number | null;
  } | null;
}

/**
 * `/api/stats`: the relay's totals. With one stream it also carries that stream's
 * stats at the top level, as before there were several.
 */
export interface RelayStats extends Partial<StreamStats> {
  uptimeSeconds: number;
  /** Shutting down (SIGTERM): /healthz fails, viewers are about to be closed. */
  draining: boolean;
  streams: number;
  live: boolean;
  viewers: number;
  connections: number;
  bitrate: number;
}
