import { bodyStart, forEachChild, type StreamInfo } from '../webm/header.js';
import { ID } from '../webm/ids.js';
import { readUint, vintLength } from '../webm/vint.js';
import type { WebmHeader } from '../webm/splitter.js';

/** Segment with an unknown size: the stream has no end a viewer could know of. */
const LIVE_SEGMENT_START = Buffer.from([0x18, 0x53, 0x80, 0x67, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);

export interface InitSegment {
  /** EBML header, live Segment start, Info and Tracks: what every viewer gets first. */
  bytes: Buffer;
  info: StreamInfo;
}

/**
 * The canonical init segment for a producer's header. SeekHead and Cues point at file
 * offsets that mean nothing in a relayed stream, Void is padding, and a Duration
 * would tell a `<video>` the live stream ends: all are dropped.
 */
export function buildInitSegment(header: WebmHeader): InitSegment {
  const parts: Buffer[] = [header.ebml, LIVE_SEGMENT_START];
  for (const { id, bytes } of header.sections) {
    if (id === ID.Info) parts.push(withoutChild(bytes, ID.Duration));
    else if (id === ID.Tracks) parts.push(withoutVideoDefaultDuration(bytes));
  }
  return { bytes: Buffer.concat(parts), info: header.info };
}

/**
 * Tracks without the video tracks' DefaultDuration. With it, a browser's MSE takes every
 * frame to last exactly one frame period, and a live encoder that skips frames (a busy
 * CPU, a camera) leaves a gap of more than two periods: MSE then sees a discontinuity
 * and drops every frame up to the next keyframe (Chromium: a hole in `buffered` and a
 * stall of up to a GOP). Without it, each frame lasts until the next one.
 */
function withoutVideoDefaultDuration(tracks: Buffer): Buffer {
  return rebuildChildren(tracks, (id, entry) => {
    if (id !== ID.TrackEntry) return entry;
    let video = false;
    forEachChild(entry, bodyStart(entry), entry.length, (childId, s, e) => {
      if (childId === ID.TrackType && readUint(entry, s, e) === 1) video = true;
    });
    if (!video) return entry;
    // The normalizer writes video frames without their BlockAdditions (where alpha planes
    // travel), so the track must not promise alpha: WebKit fails such a stream ("Cannot
    // handle streams without an initial alpha buffer"; Chromium's MediaRecorder sets AlphaMode).
    return rebuildChildren(entry, (childId, child) =>
      childId === ID.DefaultDuration ? null : childId === ID.Video ? withoutChild(child, ALPHA_MODE) : child,
    );
  });
}

/** Video > AlphaMode: the frames' BlockAdditions carry an alpha plane. */
const ALPHA_MODE = 0x53c0;

/** A copy of a master element without its children of one ID. */
function withoutChild(element: Buffer, dropId: number): Buffer {
  return rebuildChildren(element, (id, child) => (id === dropId ? null : child));
}

/** A copy of a master element whose children are what `map` returns for each (null: left out). */
export function rebuildChildren(element: Buffer, map: (id: number, child: Buffer) => Buffer | null): Buffer {
  const kept: Buffer[] = [];
  forEachChild(element, bodyStart(element), element.length, (id, _s, end, start) => {
    const child = map(id, element.subarray(start, end));
    if (child) kept.push(child);
  });
  const body = Buffer.concat(kept);
  return Buffer.concat([element.subarray(0, vintLength(element[0])), encodeLength(body.length), body]);
}

/** An 8-byte size field, so rebuilding never changes with the body's length class. */
function encodeLength(length: number): Buffer {
  const out = Buffer.alloc(8);
  out[0] = 0x01;
  out.writeUIntBE(length, 2, 6);
  return out;
}

/** Two init segments describe the same tracks, so a viewer can go on without a new one. */
export function sameTracks(a: StreamInfo, b: StreamInfo): boolean {
  if (a.timecodeScale !== b.timecodeScale || a.tracks.length !== b.tracks.length) return false;
  return a.tracks.every((t, i) => {
    const u = b.tracks[i];
    return (
      t.number === u.number &&
      t.kind === u.kind &&
      t.codecId === u.codecId &&
      t.width === u.width &&
      t.height === u.height &&
      t.sampleRate === u.sampleRate &&
      t.channels === u.channels &&
      (t.codecPrivate ?? Buffer.alloc(0)).equals(u.codecPrivate ?? Buffer.alloc(0))
    );
  });
}
