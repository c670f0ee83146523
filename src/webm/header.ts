import { ID } from './ids.js';
import { readId, readSize, readUint, vintLength, UNKNOWN_SIZE } from './vint.js';

export type TrackKind = 'video' | 'audio' | 'other';

export interface TrackInfo {
  number: number;
  kind: TrackKind;
  /** Matroska codec ID, e.g. `V_VP8`, `A_OPUS`. */
  codecId: string;
  codecPrivate?: Buffer;
  /** The codec as MediaSource names it (`vp8`, `vp9`, `av01.0.05M.08`, `opus`, `vorbis`), or undefined when browsers have no name for it. */
  mseCodec?: string;
  width?: number;
  height?: number;
  sampleRate?: number;
  channels?: number;
  /** DefaultDuration: how long each frame lasts, in nanoseconds, when the producer says. */
  defaultDuration?: number;
}

/** What the header (everything before the first Cluster) says about the stream. */
export interface StreamInfo {
  docType: string;
  /** Nanoseconds per timecode tick (Info/TimecodeScale, default 1 ms). */
  timecodeScale: number;
  tracks: TrackInfo[];
  /** MediaSource type, e.g. `video/webm; codecs="vp8,opus"`. */
  mimeType: string;
}

/** Where a well-formed element's body starts, after its ID and size fields. */
export function bodyStart(element: Uint8Array): number {
  const idLength = vintLength(element[0]);
  return idLength + vintLength(element[idLength]);
}

/** Calls `visit` for each element laid out in buf[start, end). Stops at malformed data. */
export function forEachChild(
  buf: Buffer,
  start: number,
  end: number,
  visit: (id: number, dataStart: number, dataEnd: number, elementStart: number) => void,
): void {
  let pos = start;
  while (pos < end) {
    const idLength = vintLength(buf[pos]);
    if (idLength === 0 || idLength > 4 || pos + idLength >= end) return;
    const id = readId(buf, pos, idLength);
    const sizeLength = vintLength(buf[pos + idLength]);
    if (sizeLength === 0 || pos + idLength + sizeLength > end) return;
    const size = readSize(buf, pos + idLength, sizeLength);
    const dataStart = pos + idLength + sizeLength;
    const dataEnd = size === UNKNOWN_SIZE ? end : Math.min(end, dataStart + size);
    visit(id, dataStart, dataEnd, pos);
    pos = dataEnd;
  }
}

function readFloat(buf: Buffer, start: number, end: number): number | undefined {
  if (end - start === 4) return buf.readFloatBE(start);
  if (end - start === 8) return buf.readDoubleBE(start);
  return undefined;
}

/** MSE codec string for AV1 from its AV1CodecConfigurationRecord (av1-isobmff §2.3). */
export function av1CodecString(record?: Buffer): string {
  if (!record || record.length < 4) return 'av01.0.08M.08';
  const profile = record[1] >> 5;
  const level = record[1] & 0x1f;
  const tier = record[2] & 0x80 ? 'H' : 'M';
  const highBitDepth = (record[2] & 0x40) !== 0;
  const twelveBit = (record[2] & 0x20) !== 0;
  const bitDepth = highBitDepth ? (twelveBit ? 12 : 10) : 8;
  return `av01.${profile}.${String(level).padStart(2, '0')}${tier}.${String(bitDepth).padStart(2, '0')}`;
}

function mseCodecFor(codecId: string, codecPrivate?: Buffer): string | undefined {
  switch (codecId) {
    case 'V_VP8':
      return 'vp8';
    case 'V_VP9':
      return 'vp9';
    case 'V_AV1':
      return av1CodecString(codecPrivate);
    case 'A_OPUS':
      return 'opus';
    case 'A_VORBIS':
      return 'vorbis';
    default:
      return undefined;
  }
}

function parseTrackEntry(buf: Buffer, start: number, end: number): TrackInfo {
  const track: TrackInfo = { number: 0, kind: 'other', codecId: '' };
  forEachChild(buf, start, end, (id, s, e) => {
    switch (id) {
      case ID.TrackNumber:
        track.number = readUint(buf, s, e);
        break;
      case ID.TrackType: {
        const type = readUint(buf, s, e);
        track.kind = type === 1 ? 'video' : type === 2 ? 'audio' : 'other';
        break;
      }
      case ID.CodecID:
        track.codecId = buf.toString('latin1', s, e).replace(/\0+$/, '');
        break;
      case ID.CodecPrivate:
        track.codecPrivate = Buffer.from(buf.subarray(s, e));
        break;
      case ID.DefaultDuration:
        track.defaultDuration = readUint(buf, s, e);
        break;
      case ID.Video:
        forEachChild(buf, s, e, (vid, vs, ve) => {
          if (vid === ID.PixelWidth) track.width = readUint(buf, vs, ve);
          else if (vid === ID.PixelHeight) track.height = readUint(buf, vs, ve);
        });
        break;
      case ID.Audio:
        forEachChild(buf, s, e, (aid, as, ae) => {
          if (aid === ID.SamplingFrequency) track.sampleRate = readFloat(buf, as, ae);
          else if (aid === ID.Channels) track.channels = readUint(buf, as, ae);
        });
        break;
    }
  });
  track.mseCodec = mseCodecFor(track.codecId, track.codecPrivate);
  return track;
}

/** Reads the track list of a Tracks element's payload. */
export function parseTracks(buf: Buffer, start: number, end: number): TrackInfo[] {
  const tracks: TrackInfo[] = [];
  forEachChild(buf, start, end, (id, s, e) => {
    if (id === ID.TrackEntry) tracks.push(parseTrackEntry(buf, s, e));
  });
  return tracks;
}

/** Reads TimecodeScale from an Info element's payload (Matroska default: 1 ms). */
export function parseTimecodeScale(buf: Buffer, start: number, end: number): number {
  let scale = 1_000_000;
  forEachChild(buf, start, end, (id, s, e) => {
    if (id === ID.TimecodeScale) scale = readUint(buf, s, e) || scale;
  });
  return scale;
}

/** Reads DocType from an EBML header element's payload. */
export function parseDocType(buf: Buffer, start: number, end: number): string {
  let docType = 'matroska';
  forEachChild(buf, start, end, (id, s, e) => {
    if (id === ID.DocType) docType = buf.toString('latin1', s, e).replace(/\0+$/, '');
  });
  return docType;
}

export function mimeTypeFor(tracks: readonly TrackInfo[]): string {
  // Video first, whatever the track order: a browser's MediaRecorder numbers the audio
  // track first when its sound arrives first, and "vp9,opus" is what people look for.
  const media = tracks.filter((t) => t.kind !== 'other');
  const codecs = [...media.filter((t) => t.kind === 'video'), ...media.filter((t) => t.kind !== 'video')].map((t) => t.mseCodec ?? t.codecId);
  const kind = tracks.some((t) => t.kind === 'video') ? 'video' : 'audio';
  return `${kind}/webm; codecs="${codecs.join(',')}"`;
}
