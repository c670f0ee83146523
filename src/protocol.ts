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
  segments: SegmentStats;
}

/** A complete segment in `index.json`. Times in seconds of media time. */
export interface SegmentEntry {
  seq: number;
  /** Relative to index.json: `<epoch>/<seq>.webm`. */
  url: string;
  start: number;
  duration: number;
}

/**
 * `GET /<name>/index.json`: the segments an HTTP cache can serve. `init` followed by
 * segments N, N+1, ... is the stream a `/<name>.webm` viewer gets from the keyframe of
 * N on. URLs are relative to the index, so a path prefix added by a proxy carries over.
 */
export interface SegmentIndex {
  /** Changes with every init segment and every restart of the relay: a URL never names two things. */
  epoch: string;
  /** `<epoch>/init.webm` */
  init: string;
  /** The complete segments of the window, oldest first. */
  segments: SegmentEntry[];
  /** The segment being produced: it streams as it is made. `partial.seq + 1` is held until it starts. */
  partial: { seq: number; url: string; start: number };
  /** The longest complete segment in the window, seconds. */
  targetDuration: number;
  /** What a player needs to set up its SourceBuffer, as in the WebSocket's stream message. */
  mimeType: string;
  tracks: TrackDescription[];
}

/** The segmenter's part of `/api/streams/<name>`. */
export interface SegmentStats {
  epoch: string | null;
  live: boolean;
  /** Complete segments in the window. */
  segments: number;
  /** Bytes held: complete segments, the one being produced and the init segment. */
  bytes: number;
  /** Requests waiting for the next segment. */
  parked: number;
  /** Sequence number of the segment being produced, or null. */
  partial: number | null;
  requests: { index: number; init: number; segment: number; notFound: number; parkTimeouts: number; parkRefused: number };
  /** Origin requests per segment URL still in the window, [seq, requests], oldest first: a cache in front makes this 1. */
  perSegment: [number, number][];
  /** Segments given up because they outgrew the byte bound (a producer without keyframes). */
  oversized: number;
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
