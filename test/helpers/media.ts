/**
 * Real media for tests, made at test time by the real tools (gst-launch-1.0, ffmpeg)
 * into one temporary directory per process, and the real tools' view of it (ffprobe,
 * mkvinfo). Sources are not live, so encoding runs as fast as the CPU allows.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

let dir: string | undefined;

/** A per-process temporary directory, removed when the process exits. */
export function mediaDir(): string {
  if (!dir) {
    const created = mkdtempSync(path.join(os.tmpdir(), 'webm-relay-media-'));
    dir = created;
    process.once('exit', () => rmSync(created, { recursive: true, force: true }));
  }
  return dir;
}

let counter = 0;
function outFile(name: string): string {
  return path.join(mediaDir(), `${++counter}-${name}.webm`);
}

function run(cmd: string, args: string[], timeoutMs = 120_000): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 256 << 20, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${err.stderr || err.message}`);
  }
}

export interface Media {
  path: string;
  bytes: Buffer;
}

export type VideoCodec = 'vp8' | 'vp9' | 'av1';

/** What both generators make: how long, how large, how fast, how often a keyframe. */
interface MediaShape {
  videoCodec: VideoCodec;
  seconds: number;
  width: number;
  height: number;
  framerate: number;
  /** Video bitrate, kbit/s. */
  bitrate: number;
  /** Keyframe distance (GOP length) in frames. */
  keyframeInterval: number;
}

export interface GstOptions extends MediaShape {
  audioCodec: 'opus' | 'vorbis' | 'none';
  /** videotestsrc pattern and its properties, e.g. `ball`, or `zone-plate kx2=20 ky2=20 kt=1` (moving, costly to encode). */
  pattern: string;
}

/** Small and short: fast to make, enough clusters to test with. */
const SHAPE_DEFAULTS = { seconds: 2, width: 320, height: 240, framerate: 30, bitrate: 500 };

const GST_DEFAULTS: GstOptions = {
  ...SHAPE_DEFAULTS,
  videoCodec: 'vp8',
  audioCodec: 'opus',
  keyframeInterval: 30,
  pattern: 'ball',
};

function gstVideoEncoder(o: GstOptions): string[] {
  const bps = String(o.bitrate * 1000);
  const kf = String(o.keyframeInterval);
  switch (o.videoCodec) {
    // deadline=1 is libvpx's realtime mode; the default takes up to a second per frame.
    case 'vp8':
      return ['vp8enc', 'deadline=1', `target-bitrate=${bps}`, `keyframe-max-dist=${kf}`];
    case 'vp9':
      return ['vp9enc', 'deadline=1', 'cpu-used=8', `target-bitrate=${bps}`, `keyframe-max-dist=${kf}`];
    case 'av1':
      return ['av1enc', 'cpu-used=8', 'usage-profile=realtime', `target-bitrate=${o.bitrate}`, `keyframe-max-dist=${kf}`, '!', 'av1parse'];
  }
}

/** The argument vector of a gst-launch-1.0 pipeline writing `webmmux streamable=true` output to `file`. */
export function gstArgs(options: Partial<GstOptions>, file: string): string[] {
  const o = { ...GST_DEFAULTS, ...options };
  const frames = Math.max(1, Math.round(o.seconds * o.framerate));
  const args = [
    '-q',
    'webmmux', 'name=mux', 'streamable=true', '!', 'filesink', `location=${file}`,
    'videotestsrc', `num-buffers=${frames}`, ...`pattern=${o.pattern}`.split(' '), '!',
    `video/x-raw,format=I420,width=${o.width},height=${o.height},framerate=${o.framerate}/1`, '!',
    ...gstVideoEncoder(o), '!', 'queue', '!', 'mux.',
  ];
  if (o.audioCodec !== 'none') {
    const rate = o.audioCodec === 'opus' ? 48000 : 44100;
    // audiotestsrc's buffers hold 1024 samples by default.
    const buffers = Math.max(1, Math.round((o.seconds * rate) / 1024));
    args.push(
      'audiotestsrc', `num-buffers=${buffers}`, 'wave=ticks', '!', `audio/x-raw,rate=${rate},channels=2`, '!',
      'audioconvert', '!', o.audioCodec === 'opus' ? 'opusenc' : 'vorbisenc', '!', 'queue', '!', 'mux.',
    );
  }
  return args;
}

/** A WebM stream exactly as the relay's producers write it: GStreamer `webmmux streamable=true`. */
export function gstWebm(options: Partial<GstOptions> = {}): Media {
  const o = { ...GST_DEFAULTS, ...options };
  const file = outFile(`gst-${o.videoCodec}-${o.audioCodec}`);
  run('gst-launch-1.0', gstArgs(o, file));
  return { path: file, bytes: readFileSync(file) };
}

export interface FfmpegOptions extends MediaShape {
  audioCodec: 'opus' | 'none';
  /** `-live 1`: no Cues, no seeking back; clusters still have known sizes. */
  live: boolean;
  pixFmt: string;
  /** Cut a cluster after this many bytes / milliseconds (ffmpeg's -cluster_size_limit / -cluster_time_limit). */
  clusterSizeLimit?: number;
  clusterTimeLimitMs?: number;
}

const FFMPEG_DEFAULTS: FfmpegOptions = {
  ...SHAPE_DEFAULTS,
  videoCodec: 'vp9',
  audioCodec: 'opus',
  keyframeInterval: 45,
  live: true,
  pixFmt: 'yuv420p',
};

/** The ffmpeg argument vector for a testsrc (+ sine) WebM written to `file`. */
export function ffmpegArgs(options: Partial<FfmpegOptions>, file: string): string[] {
  const o = { ...FFMPEG_DEFAULTS, ...options };
  const args = ['-hide_banner', '-v', 'error', '-y', '-f', 'lavfi', '-i', `testsrc=size=${o.width}x${o.height}:rate=${o.framerate}`];
  if (o.audioCodec !== 'none') args.push('-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000');
  args.push('-t', String(o.seconds), '-pix_fmt', o.pixFmt, '-g', String(o.keyframeInterval), '-b:v', `${o.bitrate}k`);
  switch (o.videoCodec) {
    case 'vp8':
      args.push('-c:v', 'libvpx', '-deadline', 'realtime', '-cpu-used', '8');
      break;
    case 'vp9':
      args.push('-c:v', 'libvpx-vp9', '-deadline', 'realtime', '-cpu-used', '8');
      break;
    case 'av1':
      args.push('-c:v', 'libaom-av1', '-cpu-used', '8');
      break;
  }
  if (o.audioCodec === 'opus') args.push('-c:a', 'libopus', '-b:a', '64k');
  args.push('-f', 'webm');
  if (o.live) args.push('-live', '1');
  if (o.clusterSizeLimit !== undefined) args.push('-cluster_size_limit', String(o.clusterSizeLimit));
  if (o.clusterTimeLimitMs !== undefined) args.push('-cluster_time_limit', String(o.clusterTimeLimitMs));
  args.push(file);
  return args;
}

/** A WebM stream written by ffmpeg's muxer from lavfi testsrc/sine sources. */
export function ffmpegWebm(options: Partial<FfmpegOptions> = {}): Media {
  const o = { ...FFMPEG_DEFAULTS, ...options };
  const file = outFile(`ffmpeg-${o.videoCodec}-${o.audioCodec}${o.live ? '-live' : ''}`);
  run('ffmpeg', ffmpegArgs(o, file));
  return { path: file, bytes: readFileSync(file) };
}

export interface ProbePacket {
  /** ffprobe's stream index: Matroska tracks in header order, from 0. */
  stream: number;
  /** Presentation time in milliseconds. */
  ptsMs: number;
  keyframe: boolean;
  /** Byte offset of the frame data in the file. */
  pos: number;
  size: number;
}

/** Every packet ffprobe demuxes from `file`, in file order. */
export function ffprobePackets(file: string): ProbePacket[] {
  const out = run('ffprobe', ['-v', 'error', '-show_entries', 'packet=stream_index,pts_time,flags,pos,size', '-of', 'json', file]);
  const parsed = JSON.parse(out) as { packets: { stream_index: number; pts_time: string; flags: string; pos: string; size: string }[] };
  return parsed.packets.map((p) => ({
    stream: p.stream_index,
    ptsMs: Math.round(Number(p.pts_time) * 1000),
    keyframe: p.flags.includes('K'),
    pos: Number(p.pos),
    size: Number(p.size),
  }));
}

export interface ProbeStream {
  index: number;
  codecType: string;
  codecName: string;
  profile?: string;
  level?: number;
  pixFmt?: string;
  width?: number;
  height?: number;
  sampleRate?: number;
  channels?: number;
}

export function ffprobeStreams(file: string): ProbeStream[] {
  const out = run('ffprobe', ['-v', 'error', '-show_streams', '-of', 'json', file]);
  const parsed = JSON.parse(out) as { streams: Record<string, string | number | undefined>[] };
  return parsed.streams.map((s) => ({
    index: Number(s.index),
    codecType: String(s.codec_type),
    codecName: String(s.codec_name),
    profile: s.profile === undefined ? undefined : String(s.profile),
    level: s.level === undefined ? undefined : Number(s.level),
    pixFmt: s.pix_fmt === undefined ? undefined : String(s.pix_fmt),
    width: s.width === undefined ? undefined : Number(s.width),
    height: s.height === undefined ? undefined : Number(s.height),
    sampleRate: s.sample_rate === undefined ? undefined : Number(s.sample_rate),
    channels: s.channels === undefined ? undefined : Number(s.channels),
  }));
}

export interface MkvFrame {
  /** Matroska track number. */
  track: number;
  timestampNs: number;
  /** mkvinfo's frame type: I (keyframe flag or no ReferenceBlock), P, B. */
  type: 'I' | 'P' | 'B';
  size: number;
}

/** The frames `mkvinfo --summary` lists, in file order. */
export function mkvinfoFrames(file: string): MkvFrame[] {
  const frames: MkvFrame[] = [];
  for (const line of run('mkvinfo', ['--summary', file]).split('\n')) {
    const m = /^([IPB]) frame, track (\d+), timestamp (\d+):(\d+):(\d+)\.(\d{9}), size (\d+)/.exec(line);
    if (!m) continue;
    const [h, min, s, ns] = [m[3], m[4], m[5], m[6]].map(Number);
    frames.push({
      type: m[1] as MkvFrame['type'],
      track: Number(m[2]),
      timestampNs: ((h * 60 + min) * 60 + s) * 1e9 + ns,
      size: Number(m[7]),
    });
  }
  return frames;
}
