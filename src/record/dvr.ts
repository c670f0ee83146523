import fs from 'node:fs';
import type { ServerResponse } from 'node:http';
import { dvrWindowOf } from '../config/options.js';
import type { DvrIndex, DvrSegment } from '../protocol.js';
import type { Segmenter } from '../segments/segmenter.js';
import type { Stream } from '../stream/stream.js';
import type { TrackInfo } from '../webm/header.js';
import { initOf } from '../webm/writer.js';
import { keyframesOf, recordings, type FileInfo, type Keyframes } from './library.js';
import { RECORDING_FILE } from './recorder.js';

/**
 * The rewind window as segments. The recent part is the segmenter's window in memory;
 * before it, the recording on disk is listed as cuts from one keyframe cluster to another
 * (`/recordings/NAME/STEM/FROM-TO.webm`, byte offsets in the file). A cut's URL names
 * its bytes, which never change once on disk, so a cache may keep it for good; a long
 * window costs disk, not memory.
 */

/** A cut of a recording spans at least this much (several keyframe clusters): fewer requests, a short index. */
export const DISK_SEGMENT_S = 6;
/** A cut is never larger than this (the relay reads it from disk per request). */
const MAX_DISK_SEGMENT_BYTES = 64 << 20;
/** A cut that starts this close to the first segment in memory is left to memory. */
const OVERLAP_MS = 100;

function memorySegments(segmenter: Segmenter): { entries: DvrSegment[]; mimeType: string | null; init: string | null } {
  const epoch = segmenter.epoch;
  const init = segmenter.init;
  if (!epoch || !init) return { entries: [], mimeType: null, init: null };
  const timeline = `live:${epoch}`;
  const entries: DvrSegment[] = segmenter.segments.map((s) => ({
    url: `${epoch}/${s.seq}.webm`,
    start: s.startMs,
    duration: segmenter.seconds(s.durationTicks),
    media: segmenter.seconds(s.startTicks),
    timeline,
    from: 'memory',
  }));
  const partial = segmenter.partial;
  if (partial && segmenter.live) entries.push({ url: `${epoch}/${partial.seq}.webm`, start: partial.startMs, duration: null, media: segmenter.seconds(partial.startTicks), timeline, from: 'memory' });
  return { entries, mimeType: init.segment.info.mimeType, init: `${epoch}/init.webm` };
}

const codecsOf = (tracks: readonly TrackInfo[]) => tracks.map((t) => `${t.kind}:${t.codecId}`).join();

const stemOf = (name: string) => name.slice(0, -'.webm'.length);

/** A file's cuts: from its first keyframe, each to the first keyframe at least DISK_SEGMENT_S later (the file being written: up to its latest keyframe). */
function cutsOf(info: FileInfo, kf: Keyframes, streamName: string): DvrSegment[] {
  const ticksPerSecond = 1e9 / info.layout.timecodeScale;
  const keyframes = kf.keyframes;
  const out: DvrSegment[] = [];
  const url = (from: number, to: number) => `../recordings/${encodeURIComponent(streamName)}/${stemOf(info.name)}/${from}-${to}.webm`;
  const push = (from: (typeof keyframes)[number], to: number, toTicks: number) =>
    out.push({
      url: url(from.offset, to),
      start: Math.round(info.startMs + (from.timecode / ticksPerSecond) * 1000),
      duration: Math.round(((toTicks - from.timecode) / ticksPerSecond) * 1000) / 1000,
      media: Math.round((from.timecode / ticksPerSecond) * 1000) / 1000,
      timeline: `file:${info.name}`,
      from: 'disk',
    });
  let first = 0;
  for (let i = 1; i < keyframes.length; i++) {
    const long = keyframes[i].timecode - keyframes[first].timecode >= DISK_SEGMENT_S * ticksPerSecond;
    const large = keyframes[i].offset - keyframes[first].offset >= MAX_DISK_SEGMENT_BYTES / 2;
    if (long || large) {
      push(keyframes[first], keyframes[i].offset, keyframes[i].timecode);
      first = i;
    }
  }
  // The rest of a finished file, to its end; of the file being written, it is not whole yet.
  if (first < keyframes.length && kf.endTicks !== null && kf.clustersEnd > keyframes[first].offset) push(keyframes[first], kf.clustersEnd, kf.endTicks);
  return out;
}

/** `/<name>/dvr.json` of a stream at `nowMs`. */
export async function buildDvrIndex(stream: Stream, nowMs = Date.now()): Promise<DvrIndex> {
  const window = dvrWindowOf(stream.config);
  const memory = memorySegments(stream.segments);
  const index: DvrIndex = { name: stream.name, now: nowMs, window, recorded: stream.recorder !== null, mimeType: memory.mimeType, init: memory.init, segments: [] };
  if (window === 0) return index;
  const since = nowMs - window * 1000;
  const memoryStart = memory.entries[0]?.start ?? Infinity;
  const disk: DvrSegment[] = [];
  if (stream.recorder) {
    for (const info of await recordings(stream.recorder, since)) {
      if (info.startMs + info.durationS * 1000 < since || info.startMs >= memoryStart - OVERLAP_MS) continue;
      // Only what the live segments' SourceBuffer takes: a file of other tracks is left out.
      if (memory.mimeType !== null && codecsOf(info.layout.tracks) !== codecsOf(stream.segments.init!.segment.info.tracks)) continue;
      const kf = await keyframesOf(info);
      if (!kf) continue;
      for (const cut of cutsOf(info, kf, stream.name)) {
        if (cut.start + (cut.duration ?? 0) * 1000 > since && cut.start < memoryStart - OVERLAP_MS) disk.push(cut);
      }
    }
  }
  index.segments = [...disk, ...memory.entries.filter((e) => e.start + (e.duration ?? Infinity) * 1000 > since)];
  return index;
}

/** Every player asks for the index now and then: one build a second per stream, whatever their number. */
const INDEX_REUSE_MS = 1000;
const built = new WeakMap<Stream, { at: number; index: Promise<DvrIndex> }>();

/** The stream's index, built at most once a second; `now` is always the present. */
export async function dvrIndex(stream: Stream): Promise<DvrIndex> {
  const at = Date.now();
  let entry = built.get(stream);
  if (!entry || at - entry.at >= INDEX_REUSE_MS) {
    entry = { at, index: buildDvrIndex(stream, at) };
    built.set(stream, entry);
    entry.index.catch(() => built.delete(stream));
  }
  return { ...(await entry.index), now: Date.now() };
}

const IMMUTABLE = 'public, max-age=31536000, immutable';

/**
 * `GET /recordings/<name>/<stem>/<from>-<to>.webm`: the clusters between two keyframe
 * clusters of a recording, after its init segment. The file is looked up in the list of
 * recordings and both offsets in its keyframes; nothing of the URL reaches a path.
 * Returns false when it names no such cut.
 */
export async function serveDiskSegment(stream: Stream, stem: string, from: number, to: number, req: { method?: string; headers: Record<string, string | string[] | undefined> }, res: ServerResponse): Promise<boolean> {
  const name = `${stem}.webm`;
  if (!stream.recorder || !RECORDING_FILE.test(name) || to <= from || to - from > MAX_DISK_SEGMENT_BYTES) return false;
  const [info] = await recordings(stream.recorder, -Infinity, name);
  if (!info) return false;
  const kf = await keyframesOf(info);
  if (!kf || to > kf.clustersEnd) return false;
  if (!kf.keyframes.some((k) => k.offset === from)) return false;
  if (to !== kf.clustersEnd && !kf.keyframes.some((k) => k.offset === to)) return false;
  const init = initOf(info.layout);
  const etag = `"${stem}-${from}-${to}"`;
  const headers = { 'Content-Type': 'video/webm', 'Cache-Control': IMMUTABLE, ETag: etag, 'X-Content-Type-Options': 'nosniff' };
  if (req.headers['if-none-match'] === etag) {
    res.writeHead(304, headers);
    res.end();
    return true;
  }
  res.writeHead(200, { ...headers, 'Content-Length': String(init.length + to - from) });
  if (req.method === 'HEAD') {
    res.end();
    return true;
  }
  res.write(init);
  const reader = fs.createReadStream(info.path, { start: from, end: to - 1 });
  reader.once('error', () => res.destroy());
  res.once('close', () => reader.destroy());
  reader.pipe(res);
  return true;
}
