import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { WebmSplitter } from '../../src/webm/splitter.js';
import { startRelay, type RunningRelay } from '../helpers/relay.js';

export const PUBLISH_TOKEN = 'publish-secret-0123456789';
export const READ_TOKEN = 'viewer-secret-0123456789';
export const SIGN_KEY = 'signing-key-0123456789abcdef';

/** Writes `yaml` to a temp file of its own and starts a relay with it. */
export async function startWithConfig(yaml: string): Promise<RunningRelay & { configFile: string; dir: string }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'webm-relay-publish-'));
  const configFile = path.join(dir, 'relay.yml');
  fs.writeFileSync(configFile, yaml);
  const relay = await startRelay(['--config', configFile]);
  const stop = relay.stop;
  return {
    ...relay,
    configFile,
    dir,
    stop: async (signal) => {
      const code = await stop(signal);
      fs.rmSync(dir, { recursive: true, force: true });
      return code;
    },
  };
}

/** A small test-pattern encoder for a stream's config (cheap on a loaded machine). */
export const SMALL_ENCODER = `encoder: { width: 320, height: 180, framerate: 15, video-bitrate: 300, audio-source: none }`;

/** Two streams behind access control: `members` (read: token) and `club` (read: signed). */
export const PROTECTED_STREAMS = [
  'streams:',
  '  members:',
  `    ${SMALL_ENCODER}`,
  '    read: token',
  `    read-token: ${READ_TOKEN}`,
  '  club:',
  `    ${SMALL_ENCODER}`,
  '    read: signed',
  `    sign-key: ${SIGN_KEY}`,
  '',
].join('\n');

/** Block timestamps (ms) per track of a captured WebM, in stream order. */
export function blockTimes(bytes: Buffer): Map<number, number[]> {
  const times = new Map<number, number[]>();
  const splitter = new WebmSplitter({
    header: () => {},
    cluster: () => {},
    block: (b) => {
      const list = times.get(b.track) ?? [];
      list.push(b.timecode);
      times.set(b.track, list);
    },
    end: () => {},
    error: () => {},
  });
  splitter.feed(bytes);
  return times;
}

/** Places where a list goes backwards: `[index, before, after]`. */
export function backwards(values: number[]): [number, number, number][] {
  const out: [number, number, number][] = [];
  for (let i = 1; i < values.length; i++) if (values[i] < values[i - 1]) out.push([i, values[i - 1], values[i]]);
  return out;
}
