import fs from 'node:fs';
import express, { type Request, type Response } from 'express';
import { STREAM_NAME, dvrWindowOf } from '../config/options.js';
import { logger } from '../log.js';
import { CLOSE_REASONS } from '../protocol.js';
import type { AccessGate } from '../server/access.js';
import { corsHeaders } from '../server/access.js';
import type { Stream } from '../stream/stream.js';
import { dvrIndex, serveDiskSegment } from './dvr.js';
import { cut, entryOf, recordings, type RecordingEntry } from './library.js';
import { RECORDING_FILE } from './recorder.js';

const log = logger('record');
const NAME = STREAM_NAME.source.slice(1, -1);
const API_PATH = new RegExp(`^/api/recordings/(${NAME})$`);
const FILE_PATH = new RegExp(`^/recordings/(${NAME})/([^/]{1,80})$`);
const PAGE_PATH = new RegExp(`^/(${NAME})/recordings/$`);
/** `/<name>/dvr.json`: the rewind window as segments (every stream: one not recorded has its memory window). */
const DVR_INDEX_PATH = new RegExp(`^/(${NAME})/dvr\\.json$`);
/** `/recordings/<name>/<file stem>/<from>-<to>.webm`: a cut of a recording between two keyframe clusters (src/record/dvr.ts). */
const DISK_SEGMENT_PATH = new RegExp(`^/recordings/(${NAME})/([^/]{1,80})/(0|[1-9][0-9]{0,14})-([1-9][0-9]{0,14})\\.webm$`);
/** Longer than the one request a second that index.json allows a cache: a rewinding player asks when it needs the next segment. */
const DVR_INDEX_CACHE = 'public, max-age=0, s-maxage=1';

/** A finished file never changes; it may still be deleted by retention, so a day, not forever. */
const FINISHED_CACHE = 'public, max-age=86400';

const text = (res: Response, status: number, body: string) => res.status(status).set('Cache-Control', 'no-store').type('text/plain').send(`${body}\n`);

/** The credentials of the request (`?token=`, `?exp=&sig=`), to carry on to the links it is given. */
function credentials(req: Request): string {
  const params = new URLSearchParams();
  for (const key of ['token', 'exp', 'sig']) if (typeof req.query[key] === 'string') params.set(key, req.query[key] as string);
  const s = params.toString();
  return s ? `?${s}` : '';
}

function parseTime(value: unknown, where: string): number | null | Error {
  if (value === undefined) return null;
  const ms = typeof value === 'string' && /^\d{4}-\d\d-\d\dT/.test(value) ? Date.parse(value) : NaN;
  return Number.isFinite(ms) ? ms : new Error(`${where} must be an ISO 8601 time such as 2026-11-29T10:00:00Z`);
}

interface Span {
  from: number | null;
  to: number | null;
}

function span(req: Request, res: Response): Span | null {
  const from = parseTime(req.query.from, 'from');
  const to = parseTime(req.query.to, 'to');
  if (from instanceof Error || to instanceof Error) {
    text(res, 400, (from instanceof Error ? from : (to as Error)).message);
    return null;
  }
  return { from, to };
}

/**
 * Recordings: `GET /api/recordings/<name>`, `GET /recordings/<name>/<file>.webm` (with
 * Range), `GET /recordings/<name>/range.webm?from=&to=`, and the page `/<name>/recordings/`.
 * A stream's read access applies to all of them. File names are looked up in the
 * directory's list, never joined into a path from the request.
 */
export function recordingRoutes(streams: ReadonlyMap<string, Stream>, gate: AccessGate): express.RequestHandler {
  return (req, res, next) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return next();
    const url = req.path;
    const match = API_PATH.exec(url) ?? DISK_SEGMENT_PATH.exec(url) ?? FILE_PATH.exec(url) ?? PAGE_PATH.exec(url) ?? DVR_INDEX_PATH.exec(url);
    if (!match) {
      if (url.startsWith('/recordings/') || url.startsWith('/api/recordings/')) return text(res, 404, 'not found');
      return next();
    }
    const stream = streams.get(match[1]);
    if (!stream) return text(res, 404, `no stream named "${match[1]}"`);
    // The list of a stream that is not recorded is empty (the player asks it of every stream).
    const listing = url.startsWith('/api/') || DVR_INDEX_PATH.test(url);
    if (!stream.recorder && !listing) return text(res, 404, `stream "${stream.name}" is not recorded`);
    void gate.viewer(stream, req, `GET ${url}`).then(async (verdict) => {
      if (!verdict.ok) {
        const reason = CLOSE_REASONS[verdict.refusal];
        return text(res, reason.http, reason.text);
      }
      res.set(corsHeaders(stream.config.access, req.headers.origin));
      try {
        if (DVR_INDEX_PATH.test(url)) return void res.set('Cache-Control', DVR_INDEX_CACHE).json(await dvrIndex(stream));
        if (listing) return await list(stream, req, res);
        const cut = DISK_SEGMENT_PATH.exec(url);
        if (cut) {
          if (!(await serveDiskSegment(stream, cut[2], Number(cut[3]), Number(cut[4]), req, res))) text(res, 404, 'no such cut of a recording');
          return;
        }
        if (PAGE_PATH.test(url)) return await page(stream, req, res);
        if (match[2] === 'range.webm') return await serveCut(stream, req, res);
        return await serveFile(stream, match[2], req, res);
      } catch (error) {
        log.warn(`${stream.name}: GET ${url}: ${(error as Error).message}`);
        if (!res.headersSent) text(res, 500, 'could not read the recording');
        else res.destroy();
      }
    });
  };
}

async function entries(stream: Stream, s: Span): Promise<RecordingEntry[]> {
  const all = (await recordings(stream.recorder!)).map(entryOf);
  return all
    .filter((e) => (s.from === null || Date.parse(e.end) >= s.from) && (s.to === null || Date.parse(e.start) <= s.to))
    .reverse();
}

async function list(stream: Stream, req: Request, res: Response): Promise<void> {
  const s = span(req, res);
  if (!s) return;
  const auth = credentials(req);
  const name = encodeURIComponent(stream.name);
  const items = stream.recorder ? (await entries(stream, s)).map((e) => ({ ...e, url: `/recordings/${name}/${e.file}${auth}` })) : [];
  res.set('Cache-Control', 'no-store').json({ name: stream.name, recorded: stream.recorder !== null, dvrWindow: dvrWindowOf(stream.config), recordings: items });
}

async function serveFile(stream: Stream, requested: string, req: Request, res: Response): Promise<void> {
  if (!RECORDING_FILE.test(requested)) return void text(res, 404, 'no such recording');
  const found = (await recordings(stream.recorder!)).find((f) => f.name === requested);
  if (!found) return void text(res, 404, 'no such recording');
  const size = found.size;
  const finished = found.live === null && found.layout.finished;
  const headers: Record<string, string> = {
    'Content-Type': 'video/webm',
    'Accept-Ranges': 'bytes',
    'X-Content-Type-Options': 'nosniff',
    'Cache-Control': finished ? FINISHED_CACHE : 'no-cache',
  };
  if (finished) {
    const etag = `"${size.toString(16)}-${Math.round(found.mtimeMs).toString(16)}"`;
    headers.ETag = etag;
    if (req.headers['if-none-match'] === etag) return void res.status(304).set(headers).end();
  }
  let start = 0;
  let end = size - 1;
  let status = 200;
  const range = req.headers.range;
  if (range && (!req.headers['if-range'] || req.headers['if-range'] === headers.ETag)) {
    const m = /^bytes=(\d*)-(\d*)$/.exec(range.trim());
    if (m && (m[1] !== '' || m[2] !== '')) {
      if (m[1] === '') {
        start = Math.max(0, size - Number(m[2]));
      } else {
        start = Number(m[1]);
        if (m[2] !== '') end = Math.min(end, Number(m[2]));
      }
      if (start >= size || start > end) {
        return void res.status(416).set({ ...headers, 'Content-Range': `bytes */${size}` }).end();
      }
      status = 206;
      headers['Content-Range'] = `bytes ${start}-${end}/${size}`;
    }
    // Several ranges, or a form not understood: the whole file (RFC 9110 allows ignoring Range).
  }
  headers['Content-Length'] = String(end - start + 1);
  res.status(status).set(headers);
  if (req.method === 'HEAD' || end < start) return void res.end();
  const reader = fs.createReadStream(found.path, { start, end });
  reader.once('error', (error) => {
    log.warn(`${stream.name}: reading ${found.name}: ${error.message}`);
    res.destroy();
  });
  res.once('close', () => reader.destroy());
  reader.pipe(res);
}

async function serveCut(stream: Stream, req: Request, res: Response): Promise<void> {
  const s = span(req, res);
  if (!s) return;
  const result = await cut(stream.recorder!, s.from ?? 0, s.to ?? Number.MAX_SAFE_INTEGER);
  if (!result) return void text(res, 404, 'no recording in that span');
  const from = new Date(result.startMs).toISOString().replace(/\.\d{3}Z$/, 'Z').replace(/:/g, '-');
  res.status(200).set({
    'Content-Type': 'video/webm',
    'Content-Length': String(result.bytes),
    'Cache-Control': 'no-cache',
    'Content-Disposition': `inline; filename="${stream.name}-${from}.webm"`,
    // Where the cut begins (the keyframe at or before `from`): the player's timeline maps its time to the clock with it.
    'X-Recording-Start': new Date(result.startMs).toISOString(),
    'Access-Control-Expose-Headers': 'X-Recording-Start',
    'X-Content-Type-Options': 'nosniff',
  });
  if (req.method === 'HEAD') return void res.end();
  await result.write(res);
  res.end();
}

const escape = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function formatDuration(seconds: number): string {
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h > 0 ? `${h} h ${String(m).padStart(2, '0')} min` : m > 0 ? `${m} min ${String(s % 60).padStart(2, '0')} s` : `${s} s`;
}

function formatBytes(n: number): string {
  return n >= 1 << 30 ? `${(n / 2 ** 30).toFixed(1)} GiB` : n >= 1 << 20 ? `${(n / 2 ** 20).toFixed(1)} MiB` : `${Math.max(1, Math.round(n / 1024))} KiB`;
}

/** `/<name>/recordings/`: the recordings by day (UTC), each playable in the page. */
async function page(stream: Stream, req: Request, res: Response): Promise<void> {
  const auth = credentials(req);
  const name = escape(stream.name);
  const byDay = new Map<string, RecordingEntry[]>();
  for (const e of await entries(stream, { from: null, to: null })) {
    const day = e.start.slice(0, 10);
    if (!byDay.has(day)) byDay.set(day, []);
    byDay.get(day)!.push(e);
  }
  const days = [...byDay].map(
    ([day, items]) =>
      `<h2>${day}</h2>\n<ul>\n` +
      items
        .map((e) => {
          const href = `../../recordings/${encodeURIComponent(stream.name)}/${e.file}${auth}`;
          return `<li><a class="recording" href="${escape(href)}">${e.start.slice(11, 19)}–${e.end.slice(11, 19)} UTC</a> ${formatDuration(e.duration)}, ${formatBytes(e.bytes)}${e.recording ? ' <em>(recording)</em>' : ''}</li>`;
        })
        .join('\n') +
      '\n</ul>',
  );
  const body = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${name}: recordings · webm-relay</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="stylesheet" href="../../style.css"></head>
<body><main>
<h1>${name}: recordings</h1>
<p><a href="../${auth}">live</a></p>
<video id="playback" controls preload="metadata" style="width:100%;max-width:960px;display:none"></video>
${days.length > 0 ? days.join('\n') : '<p id="empty">No recordings yet.</p>'}
</main>
<script>
for (const link of document.querySelectorAll('a.recording')) {
  link.addEventListener('click', (event) => {
    event.preventDefault();
    const video = document.getElementById('playback');
    video.style.display = '';
    video.src = link.href;
    video.play().catch(() => {});
  });
}
</script>
</body></html>
`;
  res.status(200).set({ 'Cache-Control': 'no-cache', 'Content-Security-Policy': "frame-ancestors 'self'" }).type('html').send(body);
}
