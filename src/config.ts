import { parseArgs } from 'node:util';
import type { JoinPolicy } from './hub/hub.js';

export type VideoCodec = 'vp8' | 'vp9';
export type AudioCodec = 'opus' | 'vorbis';

/** Where encoded WebM comes from. */
export type IngestSource =
  /** Spawn gst-launch-1.0 and let it connect to a loopback port of our own. */
  | { kind: 'encoder' }
  /** Listen for an external producer. */
  | { kind: 'tcp'; host: string; port: number }
  | { kind: 'stdin' }
  /** Pull another relay's /live.webm (edge mode). */
  | { kind: 'http'; url: string };

export interface Config {
  host: string;
  port: number;
  ingest: IngestSource;
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
  gstLaunch: string;
  join: JoinPolicy;
  maxViewers: number;
  maxQueueBytes: number;
  stallTimeoutMs: number;
  producerGraceMs: number;
  /** Edge mode: an upstream silent this long is dropped and pulled again. */
  upstreamTimeoutMs: number;
  /** On SIGTERM: /healthz fails and the listener closes at once; viewers are closed after this long. */
  drainMs: number;
  maxHeaderBytes: number;
  maxElementBytes: number;
  wsMaxPayloadBytes: number;
  /** Enables `PUT /ingest` for producers that present it as a Bearer token. */
  ingestToken: string | null;
  publicDir: string;
}

interface OptionSpec {
  /** Long option name; its environment variable is WEBM_RELAY_<NAME_IN_CAPS>. */
  name: string;
  value: string;
  default: string;
  help: string;
}

/** Every option, in --help order. Values are validated in `parseConfig`. */
export const OPTIONS: readonly OptionSpec[] = [
  { name: 'port', value: 'N', default: '9001', help: 'HTTP and WebSocket port' },
  { name: 'host', value: 'ADDR', default: '0.0.0.0', help: 'address viewers connect to' },
  { name: 'ingest', value: 'SRC', default: 'encoder', help: 'encoder (spawn GStreamer), tcp://HOST:PORT (listen for a producer), - (stdin), or http://RELAY/live.webm (edge)' },
  { name: 'video-source', value: 'ELEMENT', default: 'videotestsrc is-live=true pattern=smpte horizontal-speed=4', help: 'GStreamer video source element and properties, e.g. "v4l2src device=/dev/video0"' },
  { name: 'audio-source', value: 'ELEMENT', default: 'audiotestsrc is-live=true wave=sine freq=440 volume=0.1', help: 'GStreamer audio source element, e.g. "pulsesrc", or none' },
  { name: 'width', value: 'PX', default: '640', help: 'video width' },
  { name: 'height', value: 'PX', default: '360', help: 'video height' },
  { name: 'framerate', value: 'FPS', default: '30', help: 'video frames per second' },
  { name: 'video-bitrate', value: 'KBPS', default: '1000', help: 'video bitrate, kbit/s' },
  { name: 'audio-bitrate', value: 'KBPS', default: '64', help: 'audio bitrate, kbit/s' },
  { name: 'keyframe-interval', value: 'S', default: '1', help: 'seconds between keyframes, where new viewers start (the encoder counts frames: frames dropped on an overloaded machine space them further)' },
  { name: 'video-codec', value: 'CODEC', default: 'vp8', help: 'vp8 or vp9' },
  { name: 'audio-codec', value: 'CODEC', default: 'opus', help: 'opus or vorbis' },
  { name: 'gst-launch', value: 'PATH', default: 'gst-launch-1.0', help: 'the gst-launch-1.0 program' },
  { name: 'join', value: 'POLICY', default: 'latest-keyframe', help: 'where new viewers start: latest-keyframe (instant picture) or next-keyframe (lowest latency)' },
  { name: 'max-viewers', value: 'N', default: '1000', help: 'viewers beyond this get HTTP 503 / WebSocket close 1013' },
  { name: 'max-queue', value: 'BYTES', default: '4M', help: 'per-viewer backlog before it skips to the next keyframe' },
  { name: 'stall-timeout', value: 'S', default: '10', help: 'disconnect a viewer that has read nothing for this long' },
  { name: 'producer-grace', value: 'S', default: '30', help: 'keep viewers this long after the producer stops' },
  { name: 'upstream-timeout', value: 'S', default: '3', help: 'edge mode: reconnect when the upstream has sent nothing for this long (a few keyframe intervals)' },
  { name: 'drain', value: 'S', default: '5', help: 'on SIGTERM, fail /healthz and stop accepting at once, then close viewers after this long, so load balancers move them (SIGINT: at once)' },
  { name: 'max-header-size', value: 'BYTES', default: '1M', help: 'largest stream header accepted from a producer' },
  { name: 'max-element-size', value: 'BYTES', default: '16M', help: 'largest block accepted from a producer' },
  { name: 'ws-max-payload', value: 'BYTES', default: '4K', help: 'largest message accepted from a WebSocket client' },
  { name: 'ingest-token', value: 'SECRET', default: '', help: 'accept a producer from any host on PUT /ingest with "Authorization: Bearer SECRET" (at least 16 characters; unset: PUT /ingest is off)' },
  { name: 'public-dir', value: 'DIR', default: '', help: 'directory of the player page (unset: the package\'s public/)' },
];

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export const envName = (option: string): string => `WEBM_RELAY_${option.toUpperCase().replace(/-/g, '_')}`;

export function helpText(): string {
  const width = Math.max(...OPTIONS.map((o) => o.name.length + o.value.length)) + 4;
  const lines = OPTIONS.map((o) => {
    const left = `  --${o.name} ${o.value}`.padEnd(width + 4);
    const def = o.default ? ` (default: ${o.default})` : '';
    return `${left}${o.help}${def}\n${' '.repeat(width + 4)}env ${envName(o.name)}`;
  });
  return [
    'Usage: webm-relay [options]',
    '',
    'Encodes one live source once (GStreamer) and relays it to any number of viewers:',
    '  http://HOST:PORT/            player page (MediaSource over WebSocket /live)',
    '  http://HOST:PORT/live.webm   the stream for a <video> tag',
    '  /api/stats, /metrics, /healthz',
    '',
    'Options (each also from its environment variable; the command line wins):',
    ...lines,
    '  -h, --help'.padEnd(width + 4) + 'show this help',
  ].join('\n');
}

function integer(name: string, text: string, min: number, max: number): number {
  const value = Number(text);
  if (!/^\d+$/.test(text) || value < min || value > max) {
    throw new ConfigError(`--${name} must be a whole number from ${min} to ${max}, got "${text}"`);
  }
  return value;
}

function decimal(name: string, text: string, min: number, max: number): number {
  const value = Number(text);
  if (!/^\d+(\.\d+)?$/.test(text) || value < min || value > max) {
    throw new ConfigError(`--${name} must be a number from ${min} to ${max}, got "${text}"`);
  }
  return value;
}

/** "64K", "4M", "1048576". */
function bytes(name: string, text: string, min: number, max: number): number {
  const match = /^(\d+)([KMG]?)i?B?$/i.exec(text);
  const value = match ? Number(match[1]) * 1024 ** ' KMG'.indexOf(match[2].toUpperCase() || ' ') : NaN;
  if (!(value >= min && value <= max)) {
    throw new ConfigError(`--${name} must be a size from ${min} to ${max} bytes (e.g. 64K, 4M), got "${text}"`);
  }
  return value;
}

function oneOf<T extends string>(name: string, text: string, choices: readonly T[]): T {
  if (!choices.includes(text as T)) throw new ConfigError(`--${name} must be one of ${choices.join(', ')}, got "${text}"`);
  return text as T;
}

/**
 * A GStreamer source description as argv tokens for gst-launch-1.0. It is never
 * handed to a shell; the check keeps it to an element (or a short chain of
 * elements) with properties, the way it would be typed after gst-launch-1.0.
 */
export function sourceTokens(name: string, text: string): string[] {
  const tokens = text.trim().split(/\s+/).filter(Boolean);
  if (tokens.length === 0 || !/^[a-z][a-z0-9_-]*$/i.test(tokens[0])) {
    throw new ConfigError(`--${name} must start with a GStreamer element name, got "${text}"`);
  }
  for (const token of tokens) {
    if (!/^[\w.,:/=+\-@()"'!\\[\]]+$/.test(token)) throw new ConfigError(`--${name}: unexpected characters in "${token}"`);
  }
  if (tokens[tokens.length - 1] === '!') throw new ConfigError(`--${name} must not end with "!"`);
  return tokens;
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

function parseIngest(text: string): IngestSource {
  if (text === 'encoder') return { kind: 'encoder' };
  if (text === '-') return { kind: 'stdin' };
  if (/^https?:\/\//.test(text)) {
    try {
      new URL(text);
    } catch {
      throw new ConfigError(`--ingest: not a valid URL: "${text}"`);
    }
    return { kind: 'http', url: text };
  }
  const tcp = /^tcp:\/\/(\[[^\]]+\]|[^:/]+):(\d+)\/?$/.exec(text);
  if (tcp) return { kind: 'tcp', host: tcp[1].replace(/^\[|\]$/g, ''), port: integer('ingest', tcp[2], 1, 65535) };
  throw new ConfigError(`--ingest must be encoder, tcp://HOST:PORT, - or http://.../live.webm, got "${text}"`);
}

/** Reads options from the command line and the environment. Throws ConfigError with a message for the user. */
export function parseConfig(argv: string[], env: NodeJS.ProcessEnv = process.env): Config | 'help' {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        help: { type: 'boolean', short: 'h' },
        ...Object.fromEntries(OPTIONS.map((o) => [o.name, { type: 'string' as const }])),
      },
      strict: true,
      allowPositionals: false,
    });
  } catch (error) {
    throw new ConfigError(`${(error as Error).message}\nRun webm-relay --help for the options.`);
  }
  if (parsed.values.help) return 'help';
  const get = (name: string): string => {
    const spec = OPTIONS.find((o) => o.name === name)!;
    return (parsed.values as Record<string, string | undefined>)[name] ?? env[envName(name)] ?? spec.default;
  };

  const audioSource = get('audio-source');
  const config: Config = {
    host: get('host'),
    port: integer('port', get('port'), 0, 65535),
    ingest: parseIngest(get('ingest')),
    videoSource: get('video-source'),
    audioSource: audioSource === 'none' ? null : audioSource,
    width: integer('width', get('width'), 16, 7680),
    height: integer('height', get('height'), 16, 4320),
    framerate: integer('framerate', get('framerate'), 1, 240),
    videoBitrateKbps: integer('video-bitrate', get('video-bitrate'), 16, 100_000),
    audioBitrateKbps: integer('audio-bitrate', get('audio-bitrate'), 6, 510),
    keyframeIntervalS: decimal('keyframe-interval', get('keyframe-interval'), 0.1, 60),
    videoCodec: oneOf('video-codec', get('video-codec'), ['vp8', 'vp9'] as const),
    audioCodec: oneOf('audio-codec', get('audio-codec'), ['opus', 'vorbis'] as const),
    gstLaunch: get('gst-launch'),
    join: oneOf('join', get('join'), ['latest-keyframe', 'next-keyframe'] as const),
    maxViewers: integer('max-viewers', get('max-viewers'), 1, 100_000),
    maxQueueBytes: bytes('max-queue', get('max-queue'), 64 << 10, 1 << 30),
    stallTimeoutMs: decimal('stall-timeout', get('stall-timeout'), 0.5, 3600) * 1000,
    producerGraceMs: decimal('producer-grace', get('producer-grace'), 0, 3600) * 1000,
    upstreamTimeoutMs: decimal('upstream-timeout', get('upstream-timeout'), 0.5, 3600) * 1000,
    drainMs: decimal('drain', get('drain'), 0, 3600) * 1000,
    maxHeaderBytes: bytes('max-header-size', get('max-header-size'), 4 << 10, 64 << 20),
    maxElementBytes: bytes('max-element-size', get('max-element-size'), 64 << 10, 256 << 20),
    wsMaxPayloadBytes: bytes('ws-max-payload', get('ws-max-payload'), 64, 1 << 20),
    ingestToken: get('ingest-token') || null,
    publicDir: get('public-dir'),
  };
  if (config.ingestToken !== null && config.ingestToken.length < 16) {
    throw new ConfigError('--ingest-token must be at least 16 characters long');
  }
  if (config.ingest.kind === 'tcp' && !isLoopback(config.ingest.host)) {
    throw new ConfigError(
      `--ingest ${get('ingest')}: a raw TCP ingest has no way to check who publishes, so it listens on loopback only; ` +
        'to take a producer from another host use --ingest-token and PUT /ingest',
    );
  }
  // Validate the source descriptions now, so a typo is an error at start-up.
  sourceTokens('video-source', config.videoSource);
  if (config.audioSource) sourceTokens('audio-source', config.audioSource);
  return config;
}
