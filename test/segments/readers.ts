/**
 * Segment readers as a player reads: index.json, init, then segment after segment from
 * the one being produced, asking for N+1 as soon as N's response begins.
 */
import http from 'node:http';
import type { SegmentIndex } from '../../src/protocol.js';

/**
 * A connection per request, as many at once as asked for. Not kept alive: Varnish
 * closes an idle client connection after 5 s (timeout_idle), and a request sent on one
 * it is closing at that moment fails ("socket hang up"). Browsers retry such a
 * request; Node's client does not.
 */
export function readerAgent(): http.Agent {
  return new http.Agent({ keepAlive: false, maxSockets: Infinity });
}

export interface Fetched {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  /** Date.now() when the head arrived, and when the body ended. */
  headAt: number;
  endAt: number;
}

/**
 * GET with the response head reported as soon as it arrives. Rejects on a broken body.
 * A connection that fails before any answer is tried once more, as browsers do for an
 * idempotent request (on a loaded machine a cache may close a connection it has just
 * accepted): never a body that broke off.
 */
export async function fetchStreamed(url: string, agent: http.Agent | false, onHead: (status: number) => void = () => {}): Promise<Fetched> {
  try {
    return await fetchOnce(url, agent, onHead);
  } catch (error) {
    if (!(error instanceof NoAnswer)) throw error;
    return fetchOnce(url, agent, onHead);
  }
}

class NoAnswer extends Error {}

function fetchOnce(url: string, agent: http.Agent | false, onHead: (status: number) => void): Promise<Fetched> {
  return new Promise((resolve, reject) => {
    let answered = false;
    const request = http.get(url, { agent }, (res) => {
      answered = true;
      const headAt = Date.now();
      onHead(res.statusCode ?? 0);
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.once('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), headAt, endAt: Date.now() }));
      res.once('aborted', () => reject(new Error(`${url}: body cut off`)));
      res.once('error', reject);
    });
    request.setTimeout(30_000, () => request.destroy(new Error(`${url}: nothing for 30 s`)));
    request.on('error', (error) => {
      if (!answered && /socket hang up|ECONNRESET/.test(error.message)) reject(new NoAnswer(`${url}: ${error.message}`));
      else reject(error.message.startsWith(url) ? error : new Error(`${url}: ${error.message}`));
    });
  });
}

export async function fetchIndex(base: string, agent: http.Agent | false): Promise<SegmentIndex> {
  const r = await fetchStreamed(`${base}index.json`, agent);
  if (r.status !== 200) throw new Error(`${base}index.json: HTTP ${r.status}`);
  return JSON.parse(r.body.toString()) as SegmentIndex;
}

export interface ReaderResult {
  epoch: string;
  init: Buffer;
  /** seq -> body, in order. */
  segments: Map<number, Fetched>;
}

/**
 * Reads `count` segments from the one being produced on. `base` ends with `/<name>/`.
 * N+1 is requested when N's head arrives, so the reader is never a round trip behind.
 */
export async function readSegments(base: string, count: number, agent: http.Agent | false, startAt?: (index: SegmentIndex) => number): Promise<ReaderResult> {
  const index = await fetchIndex(base, agent);
  const initPromise = fetchStreamed(base + index.init, agent);
  const first = startAt ? startAt(index) : index.partial!.seq;
  const segments = new Map<number, Fetched>();
  const pending: Promise<void>[] = [];
  await new Promise<void>((resolve, reject) => {
    const request = (seq: number) => {
      const p = fetchStreamed(`${base}${index.epoch}/${seq}.webm`, agent, (status) => {
        if (status === 200 && seq + 1 < first + count) request(seq + 1);
      }).then((r) => {
        if (r.status !== 200) throw new Error(`segment ${seq}: HTTP ${r.status}`);
        segments.set(seq, r);
        if (segments.size === count) resolve();
      });
      p.catch(reject);
      pending.push(p);
    };
    request(first);
  });
  const init = await initPromise;
  return { epoch: index.epoch, init: init.body, segments: new Map([...segments].sort((a, b) => a[0] - b[0])) };
}
