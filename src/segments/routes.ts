import type { IncomingMessage, ServerResponse } from 'node:http';
import { STREAM_NAME } from '../config/options.js';
import type { SegmentIndex } from '../protocol.js';
import { describeTrackList } from '../stream/stream.js';
import { EPOCH_PATTERN } from './epoch.js';
import type { Segment } from './segment.js';
import type { Segmenter } from './segmenter.js';

/** A stream name as the relay accepts it. */
const NAME = STREAM_NAME;
/** A sequence number: decimal, no leading zeros, small enough to be exact. */
const SEQ = /^(0|[1-9][0-9]{0,14})$/;
/** Longest URL looked at; anything longer is a 404 before it is parsed. */
const MAX_URL_LENGTH = 512;

const IMMUTABLE = 'public, max-age=31536000, immutable';
/** Also for 404 and 503: `no-store`/`no-cache`/`private` would make Varnish stop coalescing the URL for 120 s. */
const BRIEF = 'public, max-age=1';
const INDEX = 'public, max-age=0, s-maxage=1';

const NOT_FOUND = Buffer.from('not found\n');
const NOT_LIVE = Buffer.from('stream not live\n');
const BUSY = Buffer.from('segment not available yet, try again\n');

/** Finds the segmenter of a stream by name (undefined: no such stream). */
export type SegmenterLookup = (name: string) => Segmenter | undefined;

/**
 * The CORS headers of a stream's segment answers for a page of `origin`. By default `*`:
 * a player on another origin (a CDN's hostname) must see every status, 404 and 503
 * too, not a CORS failure.
 */
export type SegmentCors = (name: string, origin: string | undefined) => Record<string, string>;
const ANY_ORIGIN: SegmentCors = () => ({ 'Access-Control-Allow-Origin': '*' });

function plain(res: ServerResponse, status: number, body: Buffer, extra: Record<string, string> = {}): void {
  res.writeHead(status, {
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': String(body.length),
    'Cache-Control': BRIEF,
    ...extra,
  });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

function notFound(res: ServerResponse, segmenter?: Segmenter): void {
  if (segmenter) segmenter.requests.notFound++;
  plain(res, 404, NOT_FOUND);
}

function mediaHeaders(etag: string, length?: number): Record<string, string> {
  const headers: Record<string, string> = {
    'Content-Type': 'video/webm',
    'Cache-Control': IMMUTABLE,
    ETag: etag,
    'X-Content-Type-Options': 'nosniff',
  };
  if (length !== undefined) headers['Content-Length'] = String(length);
  return headers;
}

/**
 * The handler for segment URLs. Returns false for a URL that is not one (other routes
 * then answer it); any URL of their shape is answered here, junk with a `404` before
 * anything is allocated for it.
 */
export function segmentRoutes(lookup: SegmenterLookup, cors: SegmentCors = ANY_ORIGIN): (req: IncomingMessage, res: ServerResponse) => boolean {
  return (req, res) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return false;
    const url = req.url ?? '';
    if (url.length > MAX_URL_LENGTH) {
      // Only claim it if it looks like ours; the rest of the app has its own 404.
      if (!/^\/[^/?]{1,64}\/(index\.json|[^/?]*\/[^/?]*\.webm)/.test(url.slice(0, 200))) return false;
      setHeaders(res, ANY_ORIGIN('', undefined));
      notFound(res);
      return true;
    }
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    const parts = path.split('/');
    // Every answer below carries them (writeHead adds what setHeader set).
    if ((parts.length === 3 && parts[2] === 'index.json') || (parts.length >= 4 && parts[parts.length - 1].endsWith('.webm') && NAME.test(parts[1]))) {
      setHeaders(res, cors(parts[1], req.headers.origin));
    }
    // ['', name, 'index.json'] or ['', name, epoch, 'N.webm']
    if (parts.length === 3 && parts[2] === 'index.json') {
      const segmenter = NAME.test(parts[1]) ? lookup(parts[1]) : undefined;
      if (!segmenter) notFound(res);
      else serveIndex(segmenter, res);
      return true;
    }
    if (parts.length < 4 || !parts[parts.length - 1].endsWith('.webm') || !NAME.test(parts[1])) return false;
    const segmenter = lookup(parts[1]);
    if (parts.length !== 4) {
      notFound(res, segmenter);
      return true;
    }
    const epoch = parts[2];
    const file = parts[3].slice(0, -'.webm'.length);
    if (!segmenter || !EPOCH_PATTERN.test(epoch)) {
      notFound(res, segmenter);
      return true;
    }
    if (file === 'init') {
      serveInit(segmenter, epoch, res);
      return true;
    }
    if (!SEQ.test(file)) {
      notFound(res, segmenter);
      return true;
    }
    serveSegment(segmenter, epoch, Number(file), req, res);
    return true;
  };
}

function setHeaders(res: ServerResponse, headers: Record<string, string>): void {
  for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
}

export function buildIndex(segmenter: Segmenter): SegmentIndex | null {
  const epoch = segmenter.epoch;
  const init = segmenter.init;
  const partial = segmenter.partial;
  if (!epoch || !init || !segmenter.live || !partial) return null;
  return {
    epoch,
    init: `${epoch}/init.webm`,
    segments: segmenter.segments.map((s) => ({
      seq: s.seq,
      url: `${epoch}/${s.seq}.webm`,
      start: segmenter.seconds(s.startTicks),
      duration: segmenter.seconds(s.durationTicks),
    })),
    partial: { seq: partial.seq, url: `${epoch}/${partial.seq}.webm`, start: segmenter.seconds(partial.startTicks) },
    targetDuration: segmenter.targetDuration,
    mimeType: init.segment.info.mimeType,
    tracks: describeTrackList(init.segment.info.tracks),
  };
}

function serveIndex(segmenter: Segmenter, res: ServerResponse): void {
  segmenter.requests.index++;
  const index = buildIndex(segmenter);
  if (!index) {
    plain(res, 503, NOT_LIVE, { 'Retry-After': '1' });
    return;
  }
  const body = Buffer.from(JSON.stringify(index));
  res.writeHead(200, {
    'Content-Type': 'application/json',
    'Content-Length': String(body.length),
    'Cache-Control': INDEX,
  });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

function serveInit(segmenter: Segmenter, epoch: string, res: ServerResponse): void {
  const init = segmenter.init?.segment.bytes;
  if (epoch !== segmenter.epoch || !init) return notFound(res, segmenter);
  segmenter.requests.init++;
  const etag = `"${epoch}-init"`;
  if (res.req.headers['if-none-match'] === etag) {
    res.writeHead(304, mediaHeaders(etag));
    res.end();
    return;
  }
  res.writeHead(200, mediaHeaders(etag, init.length));
  res.end(res.req.method === 'HEAD' ? undefined : init);
}

function serveSegment(segmenter: Segmenter, epoch: string, seq: number, req: IncomingMessage, res: ServerResponse): void {
  const found = segmenter.lookup(epoch, seq);
  if (found.kind === 'none') return notFound(res, segmenter);
  segmenter.requests.segment++;
  const etag = `"${epoch}-${seq}"`;
  if (req.headers['if-none-match'] === etag) {
    if (found.kind === 'segment') found.segment.requests++;
    res.writeHead(304, mediaHeaders(etag));
    res.end();
    return;
  }
  if (found.kind === 'segment') return sendSegment(found.segment, etag, res);
  const cancel = segmenter.park(
    seq,
    (segment) => {
      res.off('close', cancel!);
      sendSegment(segment, etag, res);
    },
    (why) => {
      res.off('close', cancel!);
      if (why === 'epoch-changed') notFound(res, segmenter);
      else if (why === 'closed') res.destroy();
      else plain(res, 503, BUSY, { 'Retry-After': '1' });
    },
  );
  if (!cancel) {
    plain(res, 503, BUSY, { 'Retry-After': '1' });
    return;
  }
  // A client that goes away while parked is forgotten at once.
  res.once('close', cancel);
}

function sendSegment(segment: Segment, etag: string, res: ServerResponse): void {
  segment.requests++;
  if (res.destroyed) return;
  if (segment.complete) {
    res.writeHead(200, mediaHeaders(etag, segment.bytes));
    if (res.req.method === 'HEAD') {
      res.end();
      return;
    }
    segment.addReader(res);
    return;
  }
  // Being produced: chunked, what exists now at once and the rest as it arrives.
  res.writeHead(200, mediaHeaders(etag));
  if (res.req.method === 'HEAD') {
    res.end();
    return;
  }
  res.socket?.setNoDelay(true);
  res.flushHeaders();
  segment.addReader(res);
}
