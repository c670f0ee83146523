import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { Writable } from 'node:stream';
import { ID } from '../webm/ids.js';
import { readId, readSize, vintLength } from '../webm/vint.js';
import {
  clusterElement,
  finishRecording,
  initOf,
  parseCues,
  readClusterHeader,
  readLayout,
  startRecording,
  type CueEntry,
  type RecordingLayout,
} from '../webm/writer.js';
import { RECORDING_FILE, compareRecordingNames, type Recorder } from './recorder.js';
import { readHead } from './recovery.js';

/** One recording as the API lists it (see README: Recordings). */
export interface RecordingEntry {
  file: string;
  /** UTC, ISO 8601. */
  start: string;
  end: string;
  /** Seconds. */
  duration: number;
  bytes: number;
  /** Being written now. */
  recording: boolean;
}

export interface FileInfo {
  name: string;
  path: string;
  size: number;
  mtimeMs: number;
  startMs: number;
  durationS: number;
  layout: RecordingLayout;
  /** Being written: readable up to `size`, keyframes from the writer. */
  live: CueEntry[] | null;
}

/** What a file's head says, kept while its size and time stay the same. */
const layoutCache = new Map<string, { size: number; mtimeMs: number; layout: RecordingLayout | null }>();

function startFromName(name: string): number {
  const stamp = RECORDING_FILE.exec(name)![1];
  return Date.parse(stamp.replace(/T(\d\d)-(\d\d)-(\d\d)Z$/, 'T$1:$2:$3Z'));
}

/**
 * The stream's recordings, oldest first; a name that is not in this list does not exist.
 * `sinceMs`: only files that may hold media from then on (their names say when they
 * started, and no file is longer than record-segment), so a long archive costs no `stat`s.
 * `only`: the one file of that name, if the directory lists it.
 */
export async function recordings(recorder: Recorder, sinceMs = -Infinity, only?: string): Promise<FileInfo[]> {
  let names: string[];
  try {
    names = await fsp.readdir(recorder.dir);
  } catch {
    return [];
  }
  const current = recorder.current();
  const out: FileInfo[] = [];
  const oldest = sinceMs - (recorder.options.segmentS + 60) * 1000;
  for (const name of names.filter((n) => RECORDING_FILE.test(n)).sort(compareRecordingNames)) {
    if (startFromName(name) < oldest || (only !== undefined && name !== only)) continue;
    const file = path.join(recorder.dir, name);
    const stat = await fsp.stat(file).catch(() => null);
    if (!stat?.isFile()) continue;
    let cached = layoutCache.get(file);
    if (!cached || cached.size !== stat.size || cached.mtimeMs !== stat.mtimeMs) {
      const layout = await readHead(file).then(({ head }) => readLayout(head), () => null);
      cached = { size: stat.size, mtimeMs: stat.mtimeMs, layout };
      layoutCache.set(file, cached);
    }
    const layout = cached.layout;
    if (!layout) continue;
    const isCurrent = current?.name === name;
    const durationS = isCurrent ? current.durationS : layout.durationTicks !== null ? (layout.durationTicks * layout.timecodeScale) / 1e9 : 0;
    out.push({
      name,
      path: file,
      size: isCurrent ? current.bytes : stat.size,
      mtimeMs: stat.mtimeMs,
      startMs: layout.startMs ?? startFromName(name),
      durationS,
      layout,
      live: isCurrent ? [...current.writer.keyframes] : null,
    });
  }
  // Bounded by the directory, not by requests: forget files that are gone.
  if (layoutCache.size > 10_000) layoutCache.clear();
  return out;
}

export function entryOf(info: FileInfo): RecordingEntry {
  return {
    file: info.name,
    start: new Date(info.startMs).toISOString(),
    end: new Date(info.startMs + info.durationS * 1000).toISOString(),
    duration: Math.round(info.durationS * 1000) / 1000,
    bytes: info.size,
    recording: info.live !== null,
  };
}

/** A file's keyframe clusters and where its clusters end; none for a file that is neither finished nor being written. */
export interface Keyframes {
  keyframes: readonly CueEntry[];
  /** File offset where its clusters end: its Cues, or what is on disk of the file being written. */
  clustersEnd: number;
  /** The file's time at `clustersEnd`, ticks (null while it is written). */
  endTicks: number | null;
}

const cuesCache = new Map<string, { size: number; mtimeMs: number; keyframes: CueEntry[] }>();

/** The keyframes of a recording: its Cues (read once per finished file), or the writer's list of the file being written. */
export async function keyframesOf(info: FileInfo): Promise<Keyframes | null> {
  if (info.live) return { keyframes: info.live, clustersEnd: info.size, endTicks: null };
  const { layout } = info;
  if (!layout.finished || layout.cuesOffset === null) return null;
  let cached = cuesCache.get(info.path);
  if (!cached || cached.size !== info.size || cached.mtimeMs !== info.mtimeMs) {
    const handle = await fsp.open(info.path, 'r');
    let keyframes: CueEntry[] | null;
    try {
      keyframes = await readCues(handle, layout.cuesOffset, layout.segmentDataStart);
    } finally {
      await handle.close();
    }
    if (!keyframes) return null;
    cached = { size: info.size, mtimeMs: info.mtimeMs, keyframes };
    if (cuesCache.size > 10_000) cuesCache.clear();
    cuesCache.set(info.path, cached);
  }
  return { keyframes: cached.keyframes, clustersEnd: layout.cuesOffset, endTicks: layout.durationTicks };
}

/** The keyframes listed by the Cues element at `offset` of a finished file; null when no Cues start there. */
async function readCues(handle: fsp.FileHandle, offset: number, segmentDataStart: number): Promise<CueEntry[] | null> {
  const header = Buffer.alloc(12);
  const { bytesRead } = await handle.read(header, 0, 12, offset);
  if (bytesRead < 12 || readId(header, 0, 4) !== ID.Cues) return null;
  const sizeLength = vintLength(header[4]);
  const body = Buffer.alloc(Math.min(readSize(header, 4, sizeLength), 16 << 20));
  await handle.read(body, 0, body.length, offset + 4 + sizeLength);
  return parseCues(body, segmentDataStart);
}

interface ClusterRef {
  file: FileInfo;
  offset: number;
  blocksOffset: number;
  end: number;
  /** Wall-clock position on the cut's timeline, ms. */
  atMs: number;
  keyframe: boolean;
}

/** The clusters of a file, read from their headers; keyframes from its Cues (or, being written, its writer). */
async function clustersOf(info: FileInfo, offsetMs: number): Promise<ClusterRef[]> {
  const handle = await fsp.open(info.path, 'r');
  try {
    const out: ClusterRef[] = [];
    const header = Buffer.alloc(32);
    const msPerTick = info.layout.timecodeScale / 1e6;
    let pos = info.layout.firstClusterOffset;
    let keyframes = info.live;
    while (pos < info.size) {
      const { bytesRead } = await handle.read(header, 0, Math.min(32, info.size - pos), pos);
      const cluster = readClusterHeader(header.subarray(0, bytesRead), pos);
      if (!cluster) {
        // After the clusters of a finished file: its Cues.
        keyframes ??= await readCues(handle, pos, info.layout.segmentDataStart);
        break;
      }
      if (cluster.end > info.size) break;
      out.push({ file: info, offset: pos, blocksOffset: cluster.blocksOffset, end: cluster.end, atMs: offsetMs + cluster.timecode * msPerTick, keyframe: false });
      pos = cluster.end;
    }
    const keyframeOffsets = new Set((keyframes ?? []).map((k) => k.offset));
    for (const c of out) c.keyframe = keyframeOffsets.has(c.offset);
    return out;
  } finally {
    await handle.close();
  }
}

export interface Cut {
  bytes: number;
  startMs: number;
  durationS: number;
  files: string[];
  /** Writes the file to `out`, waiting for it to drain. */
  write(out: Writable): Promise<void>;
}

/** Two files play as one when the second starts within this of the first's end. */
const CONTIGUOUS_MS = 2000;

/**
 * One WebM for the span [fromMs, toMs]: from the last keyframe at or before `fromMs` to
 * the first keyframe at or after `toMs`, across files (as long as their tracks are the
 * same), with its own Cues and Duration. Null when no recording covers the span.
 */
export async function cut(recorder: Recorder, fromMs: number, toMs: number): Promise<Cut | null> {
  const all = await recordings(recorder);
  const files = all.filter((f) => f.startMs + f.durationS * 1000 >= fromMs && f.startMs <= toMs && f.size > f.layout.firstClusterOffset);
  if (files.length === 0) return null;
  const first = files[0].layout;
  const same = files.filter((f, i) => i === 0 || (f.layout.tracksElement.equals(first.tracksElement) && f.layout.timecodeScale === first.timecodeScale));
  const chosen = same.length === files.length ? files : files.slice(0, files.findIndex((f) => !same.includes(f)));
  // Files are placed on one timeline: end to end when they follow each other, by their clocks otherwise.
  const clusters: ClusterRef[] = [];
  let endMs = -Infinity;
  for (const f of chosen) {
    const offsetMs = endMs !== -Infinity && Math.abs(f.startMs - endMs) < CONTIGUOUS_MS ? endMs : Math.max(f.startMs, endMs);
    clusters.push(...(await clustersOf(f, offsetMs)));
    endMs = offsetMs + f.durationS * 1000;
  }
  let startIndex = -1;
  for (let i = 0; i < clusters.length; i++) {
    if (!clusters[i].keyframe) continue;
    if (clusters[i].atMs <= fromMs || startIndex < 0) startIndex = i;
    if (clusters[i].atMs > fromMs) break;
  }
  if (startIndex < 0) return null;
  let endIndex = clusters.length;
  for (let i = startIndex + 1; i < clusters.length; i++) {
    if (clusters[i].keyframe && clusters[i].atMs >= toMs) {
      endIndex = i;
      break;
    }
  }
  const selected = clusters.slice(startIndex, endIndex);
  const startMs = selected[0].atMs;
  const stopMs = endIndex < clusters.length ? clusters[endIndex].atMs : endMs;
  const ticksPerMs = 1e6 / first.timecodeScale;
  const { head, layout } = startRecording(initOf(first), startMs);
  const cues: CueEntry[] = [];
  const timecodes: number[] = [];
  let offset = head.length;
  for (const c of selected) {
    const timecode = Math.round((c.atMs - startMs) * ticksPerMs);
    timecodes.push(timecode);
    if (c.keyframe) cues.push({ timecode, offset });
    offset += 22 + (c.end - c.blocksOffset);
  }
  const durationTicks = Math.round((stopMs - startMs) * ticksPerMs);
  const { tail, patches } = finishRecording(layout, cues, durationTicks, offset);
  for (const p of patches) p.bytes.copy(head, p.offset);
  return {
    bytes: offset + tail.length,
    startMs,
    durationS: durationTicks / ticksPerMs / 1000,
    files: chosen.map((f) => f.name),
    write: async (out) => {
      const handles = new Map<string, fsp.FileHandle>();
      const send = (chunk: Buffer) => (out.write(chunk) ? Promise.resolve() : new Promise<void>((resolve) => out.once('drain', resolve)));
      try {
        await send(head);
        for (let i = 0; i < selected.length; i++) {
          if (out.destroyed) return;
          const c = selected[i];
          let handle = handles.get(c.file.path);
          if (!handle) handles.set(c.file.path, (handle = await fsp.open(c.file.path, 'r')));
          const body = Buffer.alloc(c.end - c.blocksOffset);
          await handle.read(body, 0, body.length, c.blocksOffset);
          for (const part of clusterElement(timecodes[i], [body])) await send(part);
        }
        await send(tail);
      } finally {
        for (const h of handles.values()) await h.close();
      }
    },
  };
}
