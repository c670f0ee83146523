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
  /** How video has been arriving lately, so that a joining player starts far enough behind live. */
  pacing?: StreamPacing;
}

/** Over the last 20 s (0: nothing measured yet). */
export interface StreamPacing {
  /** A bad second's longest wait between two sends that carried video (the upper quartile of the seconds' maxima). */
  waitMs: number;
  /** A bad second's longest interval between two video frames, in media time (the upper quartile of the seconds' maxima). */
  frameIntervalMs: number;
}

/** Server to player, text: the answer to a ping. */
export interface PongMessage {
  type: 'pong';
  /** Viewers of this stream (recounted at most once a second). */
  viewers: number;
  /** As in the stream's description, measured now. */
  pacing: StreamPacing;
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
  /** The stream is not open and no credentials came (read: token or signed; a publisher without its token). */
  unauthorized: { ws: 4401, http: 401, text: 'this stream needs a token or a signed link' },
  /** A wrong token or a bad signature. */
  forbidden: { ws: 4403, http: 403, text: 'wrong token or bad signature' },
  /** A signed link past its expiry: the same code, a text that tells the viewer what happened. */
  expired: { ws: 4403, http: 403, text: 'the link has expired' },
  /** The page's Origin is not on the stream's allow-origins (refused in the WebSocket handshake). */
  originRefused: { ws: 4403, http: 403, text: 'this origin may not embed the stream' },
  /** Too many failed attempts from this address are waiting: try later. */
  throttled: { ws: 4429, http: 429, text: 'too many failed attempts: try again later' },
} as const satisfies Record<string, { ws: number; http: number; text: string }>;

export type CloseReason = keyof typeof CLOSE_REASONS;

/**
 * The publish WebSocket `/<name>/publish`: the publisher presents the stream's token,
 * then sends its live WebM as binary messages, each at most the stream's
 * max-element-size. The token goes, best first: as a WebSocket subprotocol
 * (`Sec-WebSocket-Protocol: webm-relay.publish, webm-relay.token.<base64url of the
 * token>`, which a browser can set and which stays out of URLs and so out of access
 * logs; the relay answers with `webm-relay.publish` alone), as the first message
 * `{"type":"auth","token":...}`, or as `?token=` on the URL.
 */
export const PUBLISH_PROTOCOL = 'webm-relay.publish';
/** Followed by the token in base64url (no padding): a subprotocol may hold only an HTTP token's characters. */
export const PUBLISH_TOKEN_PROTOCOL_PREFIX = 'webm-relay.token.';

export interface PublishAuthMessage {
  type: 'auth';
  token: string;
}

/** Relay to publisher, text: sent when the relay takes the stream, then every 2 s. */
export interface PublishingMessage {
  type: 'publishing';
  /** Viewers of the stream. */
  viewers: number;
  /** Bytes taken from this publisher so far. */
  bytesIn: number;
}

/** Why the relay closes a publisher's WebSocket (code per close, never inspected as text). */
export const PUBLISH_CLOSE_REASONS = {
  /** No token came within 10 s of opening. */
  unauthorized: { ws: 4401, text: 'this stream needs its publish token' },
  forbidden: { ws: 4403, text: 'wrong publish token' },
  /** The stream has no publish token configured: it takes no published stream. */
  notPublishable: { ws: 4405, text: 'this stream takes no published stream' },
  /** One producer per stream: another is on. */
  busy: { ws: 4409, text: 'another producer is publishing this stream' },
  /** What came is not live WebM (or an element passed max-element-size). */
  invalid: { ws: 4400, text: 'not a live WebM stream' },
  /** Codecs no browser plays from WebM (e.g. H.264): the page should record VP8 or VP9. */
  unplayable: { ws: 4415, text: 'codecs browsers cannot play from WebM' },
  throttled: { ws: 4429, text: 'too many failed attempts: try again later' },
  /** A message over the stream's max-element-size. */
  tooLarge: { ws: 1009, text: 'message too large' },
  shutdown: { ws: 1001, text: 'relay shutting down' },
} as const satisfies Record<string, { ws: number; text: string }>;

export type PublishCloseReason = keyof typeof PUBLISH_CLOSE_REASONS;

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
  /** Who may watch: `open`, `token` or `signed`. */
  read: 'open' | 'token' | 'signed';
  /** Whether the one asking may watch it (its picture is left out when not). */
  access: boolean;
  /** Relative URLs of its pages and media; `snapshot` is null for those who may not watch. */
  urls: { player: string; webm: string; websocket: string; snapshot: string | null; publish: string | null };
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
  /** Credentials refused, since start: viewers' (missing, wrong or expired) and publishers'. */
  accessFailures: { read: number; publish: number };
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
  /** Recording to disk (`record`), or null when the stream is not recorded. */
  recording?: RecordingStats | null;
}

export interface RecordingStats {
  dir: string;
  /** The file being written, or null (between files, or while writing fails). */
  file: string | null;
  /** Bytes of it on disk, and waiting to be written. */
  bytes: number;
  queuedBytes: number;
  /** Why writing fails now, or null. */
  failing: string | null;
  files: number;
  failures: number;
  deleted: number;
  recovered: number;
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

/**
 * `GET /<name>/dvr.json`: the rewind window as segments with their times, oldest first.
 * The recent part is the live segments held in memory (`from: "memory"`, the same URLs as
 * index.json); before them, cuts of the recording on disk (`from: "disk"`, immutable).
 */
export interface DvrIndex {
  name: string;
  /** The relay's clock when it answered (ms since 1970, UTC): where live is. */
  now: number;
  /** Seconds the timeline reaches back (`dvr-window`); 0: the stream has no timeline. */
  window: number;
  recorded: boolean;
  /** What the player's SourceBuffer takes; null while the stream is not live. */
  mimeType: string | null;
  /** The live segments' init segment (relative to this index): appended before `memory` segments. Null while not live. */
  init: string | null;
  segments: DvrSegment[];
}

export interface DvrSegment {
  /** Relative to the index's URL. */
  url: string;
  /** Wall-clock time of its first frame, ms since 1970 (UTC). */
  start: number;
  /** Seconds; null for the segment being produced (it streams until it is whole). */
  duration: number | null;
  /** The timestamp of its first frame in its own bytes, seconds: where a player places it. */
  media: number;
  /** Segments of one timeline follow each other in their timestamps; another timeline is placed anew. */
  timeline: string;
  /** `memory`: a live segment (clusters only: `init` goes first); `disk`: a cut of a recording that starts with its own init segment. */
  from: 'memory' | 'disk';
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
