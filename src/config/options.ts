import path from 'node:path';

/**
 * Every setting the relay has, once: its name (the flag `--name`, the YAML key `name`,
 * the variable `WEBM_RELAY_NAME`), its default, its help line and where it applies.
 * The parsed types and the value checks follow; `flags.ts` and `file.ts` only decide
 * where the text of each value comes from.
 */

/** Where a setting applies: the whole relay, one stream, or one stream's encoder. */
export type Scope = 'relay' | 'stream' | 'encoder';

export interface OptionSpec {
  name: string;
  value: string;
  default: string;
  help: string;
  scope: Scope;
  /** Only on the command line (the flag-configured stream `live`), not in a config file. */
  flagOnly?: boolean;
}

export const OPTIONS: readonly OptionSpec[] = [
  { name: 'config', value: 'FILE', default: '', scope: 'relay', flagOnly: true, help: 'YAML file with named streams (see webm-relay.example.yml); without it the options below describe one stream, "live"' },
  { name: 'port', value: 'N', default: '9001', scope: 'relay', help: 'HTTP and WebSocket port' },
  { name: 'host', value: 'ADDR', default: '0.0.0.0', scope: 'relay', help: 'address viewers connect to' },
  { name: 'ingest', value: 'SRC', default: 'encoder', scope: 'stream', flagOnly: true, help: 'encoder (spawn GStreamer), tcp://HOST:PORT (listen for a producer), - (stdin), publish (PUT or the publish page, with --ingest-token), or http://RELAY/NAME.webm (edge)' },
  { name: 'video-source', value: 'ELEMENT', default: 'videotestsrc is-live=true pattern=smpte horizontal-speed=4', scope: 'encoder', help: 'GStreamer video source element and properties, e.g. "v4l2src device=/dev/video0"' },
  { name: 'audio-source', value: 'ELEMENT', default: 'audiotestsrc is-live=true wave=sine freq=440 volume=0.1', scope: 'encoder', help: 'GStreamer audio source element, e.g. "pulsesrc", or none' },
  { name: 'width', value: 'PX', default: '640', scope: 'encoder', help: 'video width' },
  { name: 'height', value: 'PX', default: '360', scope: 'encoder', help: 'video height' },
  { name: 'framerate', value: 'FPS', default: '30', scope: 'encoder', help: 'video frames per second' },
  { name: 'video-bitrate', value: 'KBPS', default: '1000', scope: 'encoder', help: 'video bitrate, kbit/s' },
  { name: 'audio-bitrate', value: 'KBPS', default: '64', scope: 'encoder', help: 'audio bitrate, kbit/s' },
  { name: 'keyframe-interval', value: 'S', default: '1', scope: 'encoder', help: 'seconds between keyframes, where new viewers start (the encoder counts frames: frames dropped on an overloaded machine space them further)' },
  { name: 'video-codec', value: 'CODEC', default: 'vp8', scope: 'encoder', help: 'vp8 or vp9' },
  { name: 'audio-codec', value: 'CODEC', default: 'opus', scope: 'encoder', help: 'opus or vorbis' },
  { name: 'gst-launch', value: 'PATH', default: 'gst-launch-1.0', scope: 'relay', help: 'the gst-launch-1.0 program' },
  { name: 'join', value: 'POLICY', default: 'latest-keyframe', scope: 'stream', help: 'where new viewers start: latest-keyframe (instant picture) or next-keyframe (lowest latency)' },
  { name: 'recover', value: 'POLICY', default: 'skip-to-keyframe', scope: 'stream', help: 'a viewer whose backlog passes --max-queue: skip-to-keyframe (stop sending, resume at the next keyframe once half of it has drained) or disconnect' },
  { name: 'max-viewers', value: 'N', default: '1000', scope: 'stream', help: 'viewers beyond this get HTTP 503 / WebSocket close 1013 (in a config file: at the top, the whole relay; under a stream, that stream)' },
  { name: 'max-queue', value: 'BYTES', default: '4M', scope: 'stream', help: 'per-viewer backlog that triggers --recover' },
  { name: 'stall-timeout', value: 'S', default: '10', scope: 'stream', help: 'disconnect a viewer that has read nothing for this long' },
  { name: 'producer-grace', value: 'S', default: '30', scope: 'stream', help: 'keep viewers this long after the producer stops' },
  { name: 'segment-window', value: 'S', default: '60', scope: 'stream', help: 'seconds of segments kept in memory for HTTP caches (/NAME/index.json, /NAME/EPOCH/SEQ.webm)' },
  { name: 'record', value: 'DIR', default: '', scope: 'stream', help: 'record the stream into DIR/NAME/<UTC start>.webm (seekable WebM files, served at /recordings/NAME/); in a config file also true (into record-dir) or false' },
  { name: 'record-dir', value: 'DIR', default: 'recordings', scope: 'relay', help: 'where streams with record: true write their recordings (DIR/NAME/)' },
  { name: 'record-segment', value: 'S', default: '3600', scope: 'stream', help: 'start a new recording file at the first keyframe after this many seconds (and whenever the tracks change)' },
  { name: 'record-keep', value: 'S', default: '', scope: 'stream', help: 'delete recordings older than this many seconds, oldest first (unset: keep them)' },
  { name: 'record-max-bytes', value: 'BYTES', default: '', scope: 'stream', help: 'delete a stream\'s oldest recordings while they take more than this (e.g. 50G; unset: no limit)' },
  { name: 'record-queue', value: 'BYTES', default: '32M', scope: 'stream', help: 'most bytes waiting for the disk; beyond, the disk is too slow: the file ends and the next starts at a keyframe once writing keeps up' },
  { name: 'dvr-window', value: 'S', default: '', scope: 'stream', help: 'the player\'s timeline reaches back this far: on disk and in memory when recorded, else within --segment-window (0: no timeline; unset: 1800 when recorded, else the segment window)' },
  { name: 'upstream-timeout', value: 'S', default: '3', scope: 'stream', help: 'edge (--ingest http://...): reconnect when the upstream has sent nothing for this long (a few keyframe intervals)' },
  { name: 'drain', value: 'S', default: '5', scope: 'relay', help: 'on SIGTERM, fail /healthz and stop accepting at once, then close viewers after this long, so load balancers move them (SIGINT: at once)' },
  { name: 'max-header-size', value: 'BYTES', default: '1M', scope: 'stream', help: 'largest stream header accepted from a producer' },
  { name: 'max-element-size', value: 'BYTES', default: '16M', scope: 'stream', help: 'largest block accepted from a producer' },
  { name: 'ws-max-payload', value: 'BYTES', default: '4K', scope: 'relay', help: 'largest message accepted from a WebSocket client' },
  { name: 'ingest-token', value: 'SECRET', default: '', scope: 'stream', flagOnly: true, help: 'accept a producer from any host on PUT /live.webm (or PUT /ingest) with "Authorization: Bearer SECRET" (at least 16 characters; unset: off)' },
  { name: 'read', value: 'MODE', default: 'open', scope: 'stream', help: 'who may watch: open, token (read-token as ?token= or the cookie the player page sets) or signed (links with ?exp=UNIX&sig=HMAC made with sign-key: webm-relay sign NAME)' },
  { name: 'read-token', value: 'SECRET', default: '', scope: 'stream', help: 'the viewers\' shared token for read: token (at least 16 characters)' },
  { name: 'sign-key', value: 'SECRET', default: '', scope: 'stream', help: 'the HMAC key of signed links for read: signed (at least 16 characters)' },
  { name: 'allow-origins', value: 'ORIGINS', default: '', scope: 'stream', help: 'origins (space-separated, e.g. https://school.example, or *) whose pages may embed the stream: CORS on the stream and snapshot, WebSocket, framing of the player page (unset: the plain stream and snapshot to any origin, the WebSocket and framing to the relay\'s own)' },
  { name: 'public-dir', value: 'DIR', default: '', scope: 'relay', help: 'directory of the player page (unset: the package\'s public/)' },
];

export const optionSpec = (name: string): OptionSpec => {
  const spec = OPTIONS.find((o) => o.name === name);
  if (!spec) throw new Error(`no option ${name}`);
  return spec;
};

export type VideoCodec = 'vp8' | 'vp9';
export type AudioCodec = 'opus' | 'vorbis';

/** Where a new viewer starts (compare GStreamer multihandlesink's `sync-method`). */
export type JoinPolicy =
  /** At the latest keyframe cluster: the picture appears at once, a GOP behind live. */
  | 'latest-keyframe'
  /** At the next keyframe cluster: up to a GOP's wait, then live with no backlog. */
  | 'next-keyframe';

/**
 * What happens to a viewer whose backlog (bytes its socket has not taken) passes
 * `maxQueueBytes` (compare multihandlesink's `recover-policy`).
 */
export type RecoverPolicy =
  /** Stop sending; once the backlog is under half the limit, resume at the next keyframe cluster. Whole GOPs are skipped, never parts of one. */
  | 'skip-to-keyframe'
  /** Close the connection: for clients that want every byte or nothing (a recorder). */
  | 'disconnect';

export interface EncoderSettings {
  videoSource: string;
  audioSource: string | null;
  width: number;
  height: number;
  framerate: number;
  videoBitrateKbps: number;
  audioBitrateKbps: number;
  keyframeIntervalS: number;
  videoCodec: VideoCodec;
  audioCodec: AudioCodec;
}

/** The limits and policies of one stream's viewers and producers. */
export interface StreamLimits {
  join: JoinPolicy;
  recover: RecoverPolicy;
  maxViewers: number;
  maxQueueBytes: number;
  stallTimeoutMs: number;
  producerGraceMs: number;
  /** Seconds of complete segments the segmenter keeps. */
  segmentWindowS: number;
  /** `dvr-window`: seconds the player's timeline reaches back; null: the default (see dvrWindowOf). */
  dvrWindowS: number | null;
  /** Edge: an upstream silent this long is dropped and pulled again. */
  upstreamTimeoutMs: number;
  maxHeaderBytes: number;
  maxElementBytes: number;
}

/** Where a stream's encoded WebM comes from: exactly one producer at a time. */
export type ProducerConfig =
  /** Spawn gst-launch-1.0 and let it connect to a loopback port of the relay's own. */
  | { kind: 'encoder'; encoder: EncoderSettings }
  /** Listen for an external producer. */
  | { kind: 'tcp'; host: string; port: number }
  | { kind: 'stdin' }
  /** `PUT /<name>.webm` with the stream's publish token, and nothing else. */
  | { kind: 'publish' }
  /** Pull another relay's `/<name>.webm` (edge). */
  | { kind: 'pull'; url: string };

/** Who may watch a stream. */
export type ReadMode =
  /** Anyone with the URL. */
  | 'open'
  /** A shared token: `?token=` or the cookie the player page sets. */
  | 'token'
  /** A link signed with an HMAC key, valid until its expiry: `?exp=UNIX&sig=...`. */
  | 'signed';

export interface AccessConfig {
  read: ReadMode;
  readToken: string | null;
  signKey: string | null;
  /** Origins whose pages may embed the stream; null: the defaults (see the allow-origins option). `*` allows any. */
  allowOrigins: string[] | null;
}

export const OPEN_ACCESS: AccessConfig = { read: 'open', readToken: null, signKey: null, allowOrigins: null };

/** Recording a stream to disk (src/record). */
export interface RecordConfig {
  /** The stream's own directory: DIR/<name>. */
  dir: string;
  segmentS: number;
  /** Recordings older than this are deleted; null: kept. */
  keepS: number | null;
  /** The stream's recordings are kept under this many bytes; null: no limit. */
  maxBytes: number | null;
  /** Bytes waiting for the disk beyond which the file ends (the disk is too slow). */
  maxQueueBytes: number;
}

/** The seconds a stream's timeline reaches back: `dvr-window`, by default 30 min when recorded, else the segment window (memory only). */
export function dvrWindowOf(config: Pick<StreamConfig, 'record' | 'limits'>): number {
  const { dvrWindowS, segmentWindowS } = config.limits;
  if (config.record) return dvrWindowS ?? DEFAULT_RECORDED_DVR_WINDOW_S;
  return Math.min(dvrWindowS ?? segmentWindowS, segmentWindowS);
}

export const DEFAULT_RECORDED_DVR_WINDOW_S = 1800;

export interface StreamConfig {
  name: string;
  /** Null: not recorded. */
  record?: RecordConfig | null;
  producer: ProducerConfig;
  /** Enables `PUT /<name>.webm` and the publish WebSocket `/<name>/publish` for producers presenting it. */
  publishToken: string | null;
  limits: StreamLimits;
  access: AccessConfig;
}

export interface RelayConfig {
  host: string;
  port: number;
  /** Viewers of all streams together. */
  maxViewers: number;
  wsMaxPayloadBytes: number;
  gstLaunch: string;
  publicDir: string;
  /** Where streams with `record: true` write (each in a directory of its name). */
  recordDir?: string;
  /** On SIGTERM: /healthz fails and the listener closes at once; viewers are closed after this long. */
  drainMs: number;
  streams: StreamConfig[];
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export const envName = (option: string): string => `WEBM_RELAY_${option.toUpperCase().replace(/-/g, '_')}`;

/** Reads the text of a setting; `where` names it in messages (`--width`, `relay.yml:7: streams.lobby.encoder.width`). */
export type Lookup = (name: string) => { text: string; where: string };

export function integer(where: string, text: string, min: number, max: number): number {
  const value = Number(text);
  if (!/^\d+$/.test(text) || value < min || value > max) {
    throw new ConfigError(`${where} must be a whole number from ${min} to ${max}, got "${text}"`);
  }
  return value;
}

export function decimal(where: string, text: string, min: number, max: number): number {
  const value = Number(text);
  if (!/^\d+(\.\d+)?$/.test(text) || value < min || value > max) {
    throw new ConfigError(`${where} must be a number from ${min} to ${max}, got "${text}"`);
  }
  return value;
}

/** "64K", "4M", "1048576". */
export function bytes(where: string, text: string, min: number, max: number): number {
  const match = /^(\d+)([KMG]?)i?B?$/i.exec(text);
  const value = match ? Number(match[1]) * 1024 ** ' KMG'.indexOf(match[2].toUpperCase() || ' ') : NaN;
  if (!(value >= min && value <= max)) {
    throw new ConfigError(`${where} must be a size from ${min} to ${max} bytes (e.g. 64K, 4M), got "${text}"`);
  }
  return value;
}

export function oneOf<T extends string>(where: string, text: string, choices: readonly T[]): T {
  if (!choices.includes(text as T)) throw new ConfigError(`${where} must be one of ${choices.join(', ')}, got "${text}"`);
  return text as T;
}

/**
 * A GStreamer source description as argv tokens for gst-launch-1.0. It is never
 * handed to a shell; the check keeps it to an element (or a short chain of
 * elements) with properties, the way it would be typed after gst-launch-1.0.
 */
export function sourceTokens(where: string, text: string): string[] {
  const tokens = text.trim().split(/\s+/).filter(Boolean);
  if (tokens.length === 0 || !/^[a-z][a-z0-9_-]*$/i.test(tokens[0])) {
    throw new ConfigError(`${where} must start with a GStreamer element name, got "${text}"`);
  }
  for (const token of tokens) {
    if (!/^[\w.,:/=+\-@()"'!\\[\]]+$/.test(token)) throw new ConfigError(`${where}: unexpected characters in "${token}"`);
  }
  if (tokens[tokens.length - 1] === '!') throw new ConfigError(`${where} must not end with "!"`);
  return tokens;
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

export function readEncoder(get: Lookup): EncoderSettings {
  const value = (name: string) => get(name).text;
  const where = (name: string) => get(name).where;
  const audioSource = value('audio-source');
  const settings: EncoderSettings = {
    videoSource: value('video-source'),
    audioSource: audioSource === 'none' ? null : audioSource,
    width: integer(where('width'), value('width'), 16, 7680),
    height: integer(where('height'), value('height'), 16, 4320),
    framerate: integer(where('framerate'), value('framerate'), 1, 240),
    videoBitrateKbps: integer(where('video-bitrate'), value('video-bitrate'), 16, 100_000),
    audioBitrateKbps: integer(where('audio-bitrate'), value('audio-bitrate'), 6, 510),
    keyframeIntervalS: decimal(where('keyframe-interval'), value('keyframe-interval'), 0.1, 60),
    videoCodec: oneOf(where('video-codec'), value('video-codec'), ['vp8', 'vp9'] as const),
    audioCodec: oneOf(where('audio-codec'), value('audio-codec'), ['opus', 'vorbis'] as const),
  };
  // Validate the source descriptions now, so a typo is an error at start-up.
  sourceTokens(where('video-source'), settings.videoSource);
  if (settings.audioSource) sourceTokens(where('audio-source'), settings.audioSource);
  return settings;
}

export function readLimits(get: Lookup): StreamLimits {
  const value = (name: string) => get(name).text;
  const where = (name: string) => get(name).where;
  return {
    join: oneOf(where('join'), value('join'), ['latest-keyframe', 'next-keyframe'] as const),
    recover: oneOf(where('recover'), value('recover'), ['skip-to-keyframe', 'disconnect'] as const),
    maxViewers: integer(where('max-viewers'), value('max-viewers'), 1, 100_000),
    maxQueueBytes: bytes(where('max-queue'), value('max-queue'), 64 << 10, 1 << 30),
    stallTimeoutMs: decimal(where('stall-timeout'), value('stall-timeout'), 0.5, 3600) * 1000,
    producerGraceMs: decimal(where('producer-grace'), value('producer-grace'), 0, 3600) * 1000,
    segmentWindowS: decimal(where('segment-window'), value('segment-window'), 1, 3600),
    dvrWindowS: value('dvr-window').trim() === '' ? null : decimal(where('dvr-window'), value('dvr-window'), 0, 7 * 24 * 3600),
    upstreamTimeoutMs: decimal(where('upstream-timeout'), value('upstream-timeout'), 0.5, 3600) * 1000,
    maxHeaderBytes: bytes(where('max-header-size'), value('max-header-size'), 4 << 10, 64 << 20),
    maxElementBytes: bytes(where('max-element-size'), value('max-element-size'), 64 << 10, 256 << 20),
  };
}

/** `record`: a directory, `true` (into `recordDir`), or `false`/unset. */
export function readRecord(get: Lookup, name: string, recordDir: string): RecordConfig | null {
  const value = (option: string) => get(option).text;
  const where = (option: string) => get(option).where;
  const text = value('record').trim();
  if (text === '' || text === 'false') return null;
  const base = text === 'true' ? recordDir : text;
  if (base === '') throw new ConfigError(`${where('record')}: record: true needs a record-dir`);
  const keep = value('record-keep');
  const max = value('record-max-bytes');
  return {
    dir: path.resolve(base, name),
    segmentS: decimal(where('record-segment'), value('record-segment'), 1, 7 * 24 * 3600),
    keepS: keep === '' ? null : decimal(where('record-keep'), keep, 1, 100 * 365 * 24 * 3600),
    maxBytes: max === '' ? null : bytes(where('record-max-bytes'), max, 1 << 20, 2 ** 53),
    maxQueueBytes: bytes(where('record-queue'), value('record-queue'), 16 << 10, 4 * 2 ** 30),
  };
}

export function readAccess(get: Lookup): AccessConfig {
  const value = (name: string) => get(name).text;
  const where = (name: string) => get(name).where;
  const read = oneOf(where('read'), value('read'), ['open', 'token', 'signed'] as const);
  const readToken = value('read-token') ? checkToken(where('read-token'), value('read-token')) : null;
  const signKey = value('sign-key') ? checkToken(where('sign-key'), value('sign-key')) : null;
  if (read === 'token' && !readToken) throw new ConfigError(`${where('read')}: read: token needs a read-token (at least 16 characters)`);
  if (read === 'signed' && !signKey) throw new ConfigError(`${where('read')}: read: signed needs a sign-key (at least 16 characters)`);
  return { read, readToken, signKey, allowOrigins: parseOrigins(where('allow-origins'), value('allow-origins')) };
}

/** `https://a.example http://b.example:8080`, or `*`; empty: null (the defaults). */
export function parseOrigins(where: string, text: string): string[] | null {
  const items = text.split(/[\s,]+/).filter(Boolean);
  if (items.length === 0) return null;
  return items.map((item) => {
    if (item === '*') return item;
    let url: URL;
    try {
      url = new URL(item);
    } catch {
      throw new ConfigError(`${where}: "${item}" is not an origin (scheme://host[:port], or *)`);
    }
    if (url.origin === 'null' || url.origin !== item.replace(/\/$/, '')) {
      throw new ConfigError(`${where}: "${item}" is not an origin (scheme://host[:port] with no path, or *)`);
    }
    return url.origin;
  });
}

export function readRelaySettings(get: Lookup): Omit<RelayConfig, 'streams'> {
  const value = (name: string) => get(name).text;
  const where = (name: string) => get(name).where;
  return {
    host: value('host'),
    port: integer(where('port'), value('port'), 0, 65535),
    maxViewers: integer(where('max-viewers'), value('max-viewers'), 1, 1_000_000),
    wsMaxPayloadBytes: bytes(where('ws-max-payload'), value('ws-max-payload'), 64, 1 << 20),
    gstLaunch: value('gst-launch'),
    publicDir: value('public-dir'),
    recordDir: value('record-dir'),
    drainMs: decimal(where('drain'), value('drain'), 0, 3600) * 1000,
  };
}

/** The defaults of the table, parsed: what code that builds parts without a config starts from. */
const defaultLookup: Lookup = (name) => ({ text: optionSpec(name).default, where: `default of ${name}` });
export const DEFAULT_ENCODER: EncoderSettings = readEncoder(defaultLookup);
export const DEFAULT_LIMITS: StreamLimits = readLimits(defaultLookup);

/** Stream names are URL path segments; these are taken by the relay's own paths. */
export const RESERVED_NAMES: ReadonlySet<string> = new Set([
  'api', 'metrics', 'healthz', 'js', 'ingest', 'recordings', 'index', 'video', 'style', 'favicon', 'publish', 'static', 'assets',
]);
export const STREAM_NAME = /^[a-z0-9][a-z0-9_-]{0,62}$/;

export function checkStreamName(where: string, name: string): void {
  if (!STREAM_NAME.test(name)) {
    throw new ConfigError(`${where}: stream name "${name}" must be 1 to 63 lowercase letters, digits, "-" or "_", starting with a letter or digit`);
  }
  if (RESERVED_NAMES.has(name)) throw new ConfigError(`${where}: stream name "${name}" is reserved for the relay's own paths`);
}

export function parseTcpListen(where: string, text: string): { host: string; port: number } {
  const tcp = /^tcp:\/\/(\[[^\]]+\]|[^:/]+):(\d+)\/?$/.exec(text);
  if (!tcp) throw new ConfigError(`${where} must be tcp://HOST:PORT, got "${text}"`);
  const host = tcp[1].replace(/^\[|\]$/g, '');
  if (!isLoopback(host)) {
    throw new ConfigError(
      `${where} ${text}: a raw TCP ingest has no way to check who publishes, so it listens on loopback only; ` +
        'to take a producer from another host, publish with a token (PUT /NAME.webm)',
    );
  }
  return { host, port: integer(where, tcp[2], 1, 65535) };
}

export function parseUpstreamUrl(where: string, text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new ConfigError(`${where}: not a valid URL: "${text}"`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new ConfigError(`${where} must be an http:// or https:// URL, got "${text}"`);
  return text;
}

export function checkToken(where: string, token: string): string {
  if (token.length < 16) throw new ConfigError(`${where} must be at least 16 characters long`);
  return token;
}
