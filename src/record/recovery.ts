import { promises as fsp } from 'node:fs';
import { ID } from '../webm/ids.js';
import { forEachChild } from '../webm/header.js';
import { readSize, vintLength } from '../webm/vint.js';
import { finishRecording, readClusterHeader, readLayout, type CueEntry, type RecordingLayout } from '../webm/writer.js';
import { frameGuess } from './file-writer.js';

/** Everything before the first cluster of a recording fits in this. */
export const HEAD_BYTES = 64 << 10;
/** A cluster larger than this is taken as damage, not media. */
const MAX_CLUSTER_BYTES = 256 << 20;

export type RecoveryResult =
  | { kind: 'finished'; clusters: number; durationS: number; bytes: number; cutBytes: number }
  /** Not one whole cluster: nothing worth keeping, the file was removed. */
  | { kind: 'removed' }
  | { kind: 'already-finished' }
  | { kind: 'not-a-recording' };

export async function readHead(file: string): Promise<{ head: Buffer; size: number }> {
  const handle = await fsp.open(file, 'r');
  try {
    const { size } = await handle.stat();
    const head = Buffer.alloc(Math.min(HEAD_BYTES, size));
    const { bytesRead } = await handle.read(head, 0, head.length, 0);
    return { head: head.subarray(0, bytesRead), size };
  } finally {
    await handle.close();
  }
}

/** A block's track, timecode relative to its cluster, and whether it is a keyframe. */
interface BlockSummary {
  track: number;
  relative: number;
  keyframe: boolean;
}

function blockSummary(buf: Buffer, start: number, end: number, simple: boolean, hasReference: boolean): BlockSummary | null {
  const trackLength = vintLength(buf[start]);
  if (trackLength === 0 || start + trackLength + 3 > end) return null;
  const track = readSize(buf, start, trackLength);
  const relative = buf.readInt16BE(start + trackLength);
  const flags = buf[start + trackLength + 2];
  return { track, relative, keyframe: simple ? (flags & 0x80) !== 0 : !hasReference };
}

/** The blocks of a cluster's payload (from after its Timecode to its end). */
export function clusterBlocks(cluster: Buffer): BlockSummary[] {
  const blocks: BlockSummary[] = [];
  forEachChild(cluster, 0, cluster.length, (id, s, e) => {
    if (id === ID.SimpleBlock) {
      const b = blockSummary(cluster, s, e, true, false);
      if (b) blocks.push(b);
    } else if (id === ID.BlockGroup) {
      let block: [number, number] | null = null;
      let reference = false;
      forEachChild(cluster, s, e, (child, cs, ce) => {
        if (child === ID.Block) block = [cs, ce];
        else if (child === ID.ReferenceBlock) reference = true;
      });
      const found = block as [number, number] | null;
      const b = found ? blockSummary(cluster, found[0], found[1], false, reference) : null;
      if (b) blocks.push(b);
    }
  });
  return blocks;
}

/** Scans the whole clusters of a recording from its first one: where they end, the keyframe clusters, the last block's time. */
export async function scanClusters(
  handle: fsp.FileHandle,
  layout: RecordingLayout,
  size: number,
): Promise<{ end: number; cues: CueEntry[]; lastTicks: number; clusters: number }> {
  const cues: CueEntry[] = [];
  let pos = layout.firstClusterOffset;
  let end = pos;
  let lastTicks = 0;
  let clusters = 0;
  const headerBuf = Buffer.alloc(32);
  const audioOnly = !layout.tracks.some((t) => t.kind === 'video');
  while (pos < size) {
    const { bytesRead } = await handle.read(headerBuf, 0, Math.min(32, size - pos), pos);
    const header = readClusterHeader(headerBuf.subarray(0, bytesRead), pos);
    if (!header || header.end > size || header.end - pos > MAX_CLUSTER_BYTES) break;
    const body = Buffer.alloc(header.end - header.blocksOffset);
    await handle.read(body, 0, body.length, header.blocksOffset);
    const blocks = clusterBlocks(body);
    const firstOfCueTrack = blocks.find((b) => b.track === layout.cueTrack);
    if (audioOnly || (firstOfCueTrack?.keyframe ?? false)) cues.push({ timecode: header.timecode, offset: pos });
    for (const b of blocks) lastTicks = Math.max(lastTicks, header.timecode + b.relative);
    clusters++;
    pos = end = header.end;
  }
  return { end, cues, lastTicks, clusters };
}

/**
 * Finishes a recording left unfinished (the relay was killed, the power went, the disk
 * filled): cuts it after its last whole cluster, and writes Cues, Duration and sizes.
 */
export async function finishUnfinished(file: string): Promise<RecoveryResult> {
  const { head, size } = await readHead(file);
  const layout = readLayout(head);
  if (!layout) return { kind: 'not-a-recording' };
  if (layout.finished) return { kind: 'already-finished' };
  const handle = await fsp.open(file, 'r+');
  try {
    const scan = await scanClusters(handle, layout, size);
    if (scan.clusters === 0) {
      await handle.close();
      await fsp.unlink(file);
      return { kind: 'removed' };
    }
    const durationTicks = scan.lastTicks + frameGuess(layout);
    const { at, tail, patches } = finishRecording(layout, scan.cues, durationTicks, scan.end);
    await handle.truncate(scan.end);
    await handle.write(tail, 0, tail.length, at);
    for (const p of patches) await handle.write(p.bytes, 0, p.bytes.length, p.offset);
    await handle.sync();
    return {
      kind: 'finished',
      clusters: scan.clusters,
      durationS: (durationTicks * layout.timecodeScale) / 1e9,
      bytes: at + tail.length,
      cutBytes: size - scan.end,
    };
  } finally {
    await handle.close().catch(() => {});
  }
}
