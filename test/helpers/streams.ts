/**
 * Helpers for relays configured by a YAML `--config` file with several named streams:
 * the file in a temporary directory of its own, the relay started on it, real ffmpeg
 * producers for `listen:` and `publish:` streams, and per-stream state from the API.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import type { StreamStats, StreamSummary } from '../../src/protocol.js';
import { track, type Producer } from './faults.js';
import { CLI, startRelay, waitFor, type RunningRelay } from './relay.js';

const dirs: string[] = [];
process.once('exit', () => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

/** A new temporary directory, removed when the test process exits. */
export function tempDir(prefix = 'webm-relay-streams-'): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  dirs.push(dir);
  return dir;
}

/** Writes `yaml` as `relay.yml` in a directory of its own; returns its path. */
export function writeConfig(yaml: string, name = 'relay.yml'): string {
  const file = path.join(tempDir(), name);
  writeFileSync(file, yaml);
  return file;
}

export interface ConfigRelay extends RunningRelay {
  configFile: string;
}

/** Starts the real relay process on a config file written from `yaml` (port 0, loopback). */
export async function startConfigRelay(yaml: string, args: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<ConfigRelay> {
  const configFile = writeConfig(yaml);
  const relay = await startRelay(['--config', configFile, ...args], env);
  return { ...relay, configFile };
}

/** The relay run to its exit on a config file (it must fail at start-up): exit code and stderr. */
export function runConfig(file: string, args: string[] = []): { code: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [CLI, '--config', file, ...args], {
    encoding: 'utf8',
    timeout: 10_000,
    env: { ...process.env, WEBM_RELAY_LOG: 'info' },
  });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

export async function streamList(relay: RunningRelay): Promise<StreamSummary[]> {
  const response = await fetch(`${relay.url}/api/streams`);
  return ((await response.json()) as { streams: StreamSummary[] }).streams;
}

export async function streamStats(relay: RunningRelay, name: string): Promise<StreamStats> {
  return (await (await fetch(`${relay.url}/api/streams/${name}`)).json()) as StreamStats;
}

/** Waits until every stream in `names` is live and media flows (not just its header), naming the ones that are not in the error. */
export async function waitStreamsLive(relay: RunningRelay, names: string[], timeoutMs = 20_000, producers: Producer[] = []): Promise<void> {
  let last: StreamSummary[] = [];
  await waitFor(`streams ${names.join(', ')} to be live`, async () => {
    // A request a relay on a loaded machine did not answer is asked again, not an error.
    last = await streamList(relay).catch(() => last);
    return names.every((name) => flowing(last.find((s) => s.name === name)));
  }, timeoutMs).catch((error: Error) => {
    const notLive = names.filter((name) => !flowing(last.find((s) => s.name === name)));
    throw new Error(`${error.message} (not live: ${notLive.join(', ')})\n${producers.map((p) => p.stderr()).join('\n')}\nrelay:\n${relay.log()}`);
  });
}

const flowing = (s: StreamSummary | undefined) => s !== undefined && s.live && s.bitrate > 0;

/** Waits for the relay's log line saying a `listen:` stream's port is open. */
export async function waitListening(relay: RunningRelay, port: number): Promise<void> {
  await waitFor(`tcp://127.0.0.1:${port} to listen`, () => relay.log().includes(`listening for a producer on tcp://127.0.0.1:${port}`), 10_000);
}

export interface FfmpegSource {
  /** lavfi video source: testsrc, testsrc2, smptebars, ... */
  pattern?: string;
  size?: string;
  /** Frames per second (15: light on a shared machine); a keyframe every second whatever the rate. */
  fps?: number;
  codec?: 'vp8' | 'vp9';
  bitrateKbps?: number;
  audio?: boolean;
}

/** ffmpeg arguments for a live test pattern (and tone), VP8 or VP9 and Opus, before the output options. */
export function ffmpegInputArgs(source: FfmpegSource = {}): string[] {
  const { pattern = 'testsrc2', size = '400x224', fps = 15, codec = 'vp9', bitrateKbps = 300, audio = true } = source;
  const encoder = codec === 'vp9' ? ['-c:v', 'libvpx-vp9', '-row-mt', '1'] : ['-c:v', 'libvpx'];
  return [
    '-hide_banner', '-loglevel', 'error', '-nostdin',
    '-re', '-f', 'lavfi', '-i', `${pattern}=size=${size}:rate=${fps}`,
    ...(audio ? ['-re', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000'] : []),
    ...encoder, '-deadline', 'realtime', '-cpu-used', '8', '-g', String(fps), '-keyint_min', String(fps), '-b:v', `${bitrateKbps}k`,
    ...(audio ? ['-c:a', 'libopus', '-b:a', '32k'] : []),
  ];
}

/** Spawns ffmpeg with `args`, tracked so that killTracked() ends it; its stderr is kept. */
export function spawnFfmpeg(args: string[]): Producer {
  const child = track(spawn('ffmpeg', args, { stdio: ['ignore', 'ignore', 'pipe'] }));
  let stderr = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (text: string) => (stderr += text));
  return { process: child, stderr: () => stderr };
}

/**
 * A live WebM producer pushing to a `listen:` stream. `-cluster_time_limit 100`: ffmpeg
 * sends a cluster only once it is complete, and short clusters keep the stream flowing.
 */
export function ffmpegTcpProducer(port: number, source: FfmpegSource = {}): Producer {
  return spawnFfmpeg([...ffmpegInputArgs(source), '-f', 'webm', '-live', '1', '-cluster_time_limit', '100', `tcp://127.0.0.1:${port}`]);
}

/** A live WebM producer publishing with `PUT /<name>.webm` and its Bearer token, ffmpeg's own HTTP client. */
export function ffmpegPutProducer(url: string, token: string, source: FfmpegSource = {}): Producer {
  return spawnFfmpeg([
    ...ffmpegInputArgs(source),
    '-f', 'webm', '-live', '1', '-cluster_time_limit', '100',
    '-method', 'PUT', '-headers', `Authorization: Bearer ${token}\r\n`, url,
  ]);
}

export interface PutAnswer {
  status: number;
  body: string;
}

/**
 * `PUT url` with the stdout of ffmpeg run with `args` (which end in an output to pipe:1)
 * as the body: resolves with the relay's answer. The body is cut when the answer arrives.
 */
export function putFromFfmpeg(url: string, token: string, args: string[], timeoutMs = 15_000): Promise<PutAnswer & { ffmpeg: Producer }> {
  const child = track(spawn('ffmpeg', args, { stdio: ['ignore', 'pipe', 'pipe'] }));
  let stderr = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (text: string) => (stderr += text));
  const ffmpeg: Producer = { process: child, stderr: () => stderr };
  return new Promise((resolve, reject) => {
    const request = http.request(url, { method: 'PUT', headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'video/x-matroska' } });
    const timer = setTimeout(() => {
      request.destroy();
      child.kill('SIGKILL');
      reject(new Error(`no answer to PUT ${url} within ${timeoutMs} ms; ffmpeg: ${stderr}`));
    }, timeoutMs);
    request.on('response', (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (text: string) => (body += text));
      response.once('end', () => {
        clearTimeout(timer);
        child.stdout!.unpipe(request);
        child.kill('SIGKILL');
        request.destroy();
        resolve({ status: response.statusCode ?? 0, body, ffmpeg });
      });
    });
    // The relay closes the upload once it has answered: a broken pipe is expected.
    request.on('error', () => {});
    child.stdout!.on('error', () => {});
    child.stdout!.pipe(request);
  });
}
