import type http from 'node:http';
import type { AccessConfig } from '../config/options.js';
import { logger } from '../log.js';
import type { Stream } from '../stream/stream.js';
import { checkRead, secretMatches } from './auth.js';
import type { FailureThrottle } from './throttle.js';

const log = logger('access');

/** Why a request was refused, named like the close reasons in src/protocol.ts. */
export type Refusal = 'unauthorized' | 'forbidden' | 'expired' | 'throttled';
export type GateVerdict<R extends Refusal = Refusal> = { ok: true } | { ok: false; refusal: R };
/** A publisher's token has no expiry. */
export type PublisherRefusal = Exclude<Refusal, 'expired'>;

/**
 * The one place that lets viewers and publishers in: checks their credentials, counts
 * and logs refusals with the address, and makes an address that keeps failing wait.
 */
export class AccessGate {
  constructor(private readonly throttle: FailureThrottle) {}

  /** A viewer asking for `what` (a path) of a stream: its query string and cookies. */
  async viewer(stream: Stream, req: http.IncomingMessage, what: string): Promise<GateVerdict> {
    const access = stream.config.access;
    if (access.read === 'open') return { ok: true };
    const address = req.socket.remoteAddress ?? '?';
    if (!(await this.throttle.admit(address))) return this.refuse(stream, 'read', address, what, 'throttled', 'too many failed attempts waiting');
    const query = new URL(req.url ?? '/', 'http://relay').searchParams;
    const verdict = checkRead(stream.name, access, query, req.headers.cookie);
    if (verdict.ok) {
      return { ok: true };
    }
    if (verdict.why === 'wrong') this.throttle.fail(address);
    const refusal = verdict.why === 'missing' ? 'unauthorized' : verdict.why === 'expired' ? 'expired' : 'forbidden';
    return this.refuse(stream, 'read', address, what, refusal, `${verdict.why} ${access.read === 'token' ? 'token' : 'signature'}`);
  }

  /** Whether the viewer may watch, without waiting, counting or logging (the stream list). */
  mayWatch(stream: Stream, req: http.IncomingMessage): boolean {
    if (stream.config.access.read === 'open') return true;
    return checkRead(stream.name, stream.config.access, new URL(req.url ?? '/', 'http://relay').searchParams, req.headers.cookie).ok;
  }

  /** A publisher presenting `presented` (null: nothing) for a stream with a publish token. */
  async publisher(stream: Stream, presented: string | null, address: string, what: string): Promise<GateVerdict<PublisherRefusal>> {
    if (!(await this.throttle.admit(address))) return this.refuse(stream, 'publish', address, what, 'throttled', 'too many failed attempts waiting');
    if (presented === null || presented === '') return this.refuse(stream, 'publish', address, what, 'unauthorized', 'missing token');
    if (!secretMatches(presented, stream.config.publishToken ?? '')) {
      this.throttle.fail(address);
      return this.refuse(stream, 'publish', address, what, 'forbidden', 'wrong token');
    }
    this.throttle.succeed(address);
    return { ok: true };
  }

  private refuse<R extends Refusal>(stream: Stream, kind: 'read' | 'publish', address: string, what: string, refusal: R, why: string): GateVerdict<R> {
    stream.accessFailures[kind]++;
    const delay = this.throttle.delayFor(address);
    log.warn(`${stream.name}: ${what} from ${address}: refused (${why})${delay > 0 ? `; its attempts now wait ${delay} ms` : ''}`);
    return { ok: false, refusal };
  }
}

/**
 * `Access-Control-Allow-Origin` for a response of the stream (its bytes, its snapshot):
 * with no allow-origins, any origin (`*`): the URL is public anyway, or carries its own
 * credentials, and no cookie is ever honoured cross-origin under `*`. With a list, the
 * asking origin when it is on it, else nothing (the browser refuses the read).
 */
export function corsHeaders(access: AccessConfig, origin: string | undefined): Record<string, string> {
  const list = access.allowOrigins;
  if (!list || list.includes('*')) return { 'Access-Control-Allow-Origin': '*' };
  if (origin && list.includes(origin)) return { 'Access-Control-Allow-Origin': origin, Vary: 'Origin' };
  return { Vary: 'Origin' };
}

/**
 * Whether a WebSocket from a page of `Origin` may connect. Browsers do not apply CORS
 * to WebSockets, so the relay checks: without allow-origins only the relay's own pages
 * (the Origin's host is the Host the request came to, or a proxy's X-Forwarded-Host),
 * with a list those origins too. Clients that are not browsers send no Origin.
 */
export function webSocketOriginAllowed(access: AccessConfig, req: http.IncomingMessage): boolean {
  const origin = req.headers.origin;
  if (!origin) return true;
  const list = access.allowOrigins ?? [];
  if (list.includes('*') || list.includes(origin)) return true;
  let url: URL;
  try {
    url = new URL(origin);
  } catch {
    return false;
  }
  // A proxy may pass on the host without its port (nginx `proxy_set_header Host $host`).
  const sameHost = (header: string) => header !== '' && (url.host === header || (!header.includes(':') && url.hostname === header));
  const forwarded = String(req.headers['x-forwarded-host'] ?? '').split(',')[0].trim();
  return sameHost(req.headers.host ?? '') || sameHost(forwarded);
}

/** `Content-Security-Policy` of the player page: who may frame it. */
export function frameAncestors(access: AccessConfig): string {
  const list = access.allowOrigins ?? [];
  return `frame-ancestors ${list.includes('*') ? '*' : ["'self'", ...list].join(' ')}`;
}
