import { mimeTypeFor, type TrackInfo } from '../webm/header.js';
import { ID } from '../webm/ids.js';
import { bodyStart, forEachChild } from '../webm/header.js';
import { readUint } from '../webm/vint.js';
import { rebuildChildren } from '../normalizer/init-segment.js';
import type { WebmHeader } from '../webm/splitter.js';

/** What every browser's MediaSource plays from WebM. */
const PLAYABLE: Record<'video' | 'audio', ReadonlySet<string>> = {
  video: new Set(['V_VP8', 'V_VP9', 'V_AV1']),
  audio: new Set(['A_OPUS', 'A_VORBIS']),
};

const ADVICE = {
  video: 'use VP8, VP9 or AV1 (ffmpeg: -c:v libvpx-vp9 -deadline realtime; GStreamer: vp8enc or vp9enc)',
  audio: 'use Opus or Vorbis (ffmpeg: -c:a libopus; GStreamer: opusenc)',
};

export type PlayableVerdict =
  /** `header` without the tracks viewers do not get; `dropped` names them. */
  | { ok: true; header: WebmHeader; dropped: TrackInfo[] }
  | { ok: false; reason: string };

/**
 * Decides, when a producer's header arrives, whether browsers can play its stream.
 * A video or audio track in a codec no browser plays from WebM refuses the producer
 * (relaying it would serve every viewer something it cannot decode); subtitle and
 * other tracks are left out of what viewers get.
 */
export function checkPlayable(header: WebmHeader): PlayableVerdict {
  const dropped: TrackInfo[] = [];
  for (const track of header.info.tracks) {
    if (track.kind === 'other') {
      dropped.push(track);
      continue;
    }
    if (!PLAYABLE[track.kind].has(track.codecId)) {
      return { ok: false, reason: `track ${track.number} is ${track.kind} in ${track.codecId}, which browsers cannot play from WebM: ${ADVICE[track.kind]}` };
    }
  }
  if (dropped.length === header.info.tracks.length) return { ok: false, reason: 'the stream has no audio or video track' };
  if (dropped.length === 0) return { ok: true, header, dropped };
  const gone = new Set(dropped.map((t) => t.number));
  const tracks = header.info.tracks.filter((t) => !gone.has(t.number));
  const sections = header.sections.map((section) =>
    section.id === ID.Tracks ? { id: section.id, bytes: withoutTracks(section.bytes, gone) } : section,
  );
  return { ok: true, header: { ...header, sections, info: { ...header.info, tracks, mimeType: mimeTypeFor(tracks) } }, dropped };
}

function withoutTracks(tracks: Buffer, numbers: ReadonlySet<number>): Buffer {
  return rebuildChildren(tracks, (id, entry) => {
    if (id !== ID.TrackEntry) return entry;
    let number = -1;
    forEachChild(entry, bodyStart(entry), entry.length, (childId, s, e) => {
      if (childId === ID.TrackNumber) number = readUint(entry, s, e);
    });
    return numbers.has(number) ? null : entry;
  });
}
