import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readLayout } from '../../src/webm/writer.js';
import { waitFor, type RunningRelay } from '../helpers/relay.js';

/** A small, fast stream with a keyframe every half second: short GOPs keep the tests short. */
export const ENCODER_ARGS = ['--width', '320', '--height', '240', '--framerate', '30', '--keyframe-interval', '0.5'];
export const GOP_S = 0.5;

export function tempDir(label: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `webm-relay-record-${label}-`));
}

export async function waitForLog(relay: { log(): string }, pattern: RegExp, timeoutMs = 20_000): Promise<RegExpExecArray> {
  let match: RegExpExecArray | null = null;
  await waitFor(`the log to match ${pattern}`, () => (match = pattern.exec(relay.log())) !== null, timeoutMs).catch((error: Error) => {
    throw new Error(`${error.message}\nlog:\n${relay.log().slice(-4000)}`);
  });
  return match!;
}

export function count(text: string, pattern: RegExp): number {
  return text.match(new RegExp(pattern.source, 'g'))?.length ?? 0;
}

export interface FileFacts {
  file: string;
  finished: boolean;
  startMs: number | null;
  /** Seconds, from Info/Duration. */
  duration: number | null;
  /** ffprobe's format duration. */
  probedDuration: number;
  cuePoints: number;
  /** Seconds from the file's start of each cue point (each keyframe cluster), as mkvinfo reads them. */
  cueTimes: number[];
  mkvinfoHasDuration: boolean;
  decodeErrors: string[];
}

/** What the real tools say of a recording. */
export function inspect(file: string): FileFacts {
  const head = fs.readFileSync(file).subarray(0, 65536);
  const layout = readLayout(head);
  const mkvinfo = execFileSync('mkvinfo', ['--all', file], { encoding: 'utf8', maxBuffer: 64 << 20 });
  const probed = spawnSync('ffprobe', ['-v', 'error', '-show_entries', 'format=duration', '-of', 'csv=p=0', file], { encoding: 'utf8' });
  const decode = spawnSync('ffmpeg', ['-hide_banner', '-v', 'error', '-i', file, '-f', 'null', '-'], { encoding: 'utf8' });
  return {
    file,
    finished: layout?.finished ?? false,
    startMs: layout?.startMs ?? null,
    duration: layout?.durationTicks != null ? (layout.durationTicks * layout.timecodeScale) / 1e9 : null,
    probedDuration: Number(probed.stdout.trim()),
    cuePoints: count(mkvinfo, /\| \+ Cue point/),
    cueTimes: [...mkvinfo.matchAll(/Cue time: (\d+):(\d+):([\d.]+)/g)].map((m) => Number(m[1]) * 3600 + Number(m[2]) * 60 + Number(m[3])),
    mkvinfoHasDuration: /\| \+ Duration: /.test(mkvinfo),
    decodeErrors: decode.stderr.split('\n').filter((l) => l.trim() !== ''),
  };
}

export function recordingFiles(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.webm'))
    .sort()
    .map((f) => path.join(dir, f));
}

/** The pids of a process's children (a relay's encoder), to end them after a SIGKILL of the relay. */
export function childPids(pid: number): number[] {
  const out = spawnSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' }).stdout;
  return out.split('\n').filter(Boolean).map(Number);
}

export type Relay = RunningRelay;
