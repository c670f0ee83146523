import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { AccessConfig } from '../config/options.js';

const digest = (text: string) => createHash('sha256').update(text).digest();

/** Compares a presented secret with the real one without leaking, through timing, how much matched. */
export function secretMatches(presented: string, secret: string): boolean {
  return timingSafeEqual(digest(presented), digest(secret));
}

/** Compares a presented Bearer token with the secret without leaking, through timing, how much matched. */
export function bearerMatches(header: string | undefined, secret: string): boolean {
  return secretMatches(/^Bearer\s+(\S+)$/i.exec(header ?? '')?.[1] ?? '', secret);
}

/**
 * The signature of a link to stream `name` valid until `expires` (UNIX seconds):
 * HMAC-SHA256 over the stream name and the expiry, base64url. It covers neither the
 * path nor the segment, so one signature opens every way into that stream (and a
 * cache can key its objects without it).
 */
export function linkSignature(name: string, expires: number, key: string): string {
  return createHmac('sha256', key).update(`${name}\n${expires}`).digest('base64url');
}

/** `exp=UNIX&sig=...` for a link to `name` that works for `ttlSeconds`. */
export function signedQuery(name: string, ttlSeconds: number, key: string, nowMs = Date.now()): string {
  const expires = Math.floor(nowMs / 1000) + Math.max(1, Math.round(ttlSeconds));
  return `exp=${expires}&sig=${linkSignature(name, expires, key)}`;
}

/** The cookie in which the player page keeps a stream's viewer token. */
export const tokenCookieName = (name: string): string => `webm-relay-${name}`;

export function cookieValue(header: string | undefined, name: string): string | null {
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) {
      try {
        return decodeURIComponent(part.slice(eq + 1).trim());
      } catch {
        return null;
      }
    }
  }
  return null;
}

/** Whether a viewer may watch: yes, or why not (`missing`: 401, `wrong`/`expired`: 403). */
export type ReadVerdict = { ok: true; via: 'open' | 'token' | 'cookie' | 'signature' } | { ok: false; why: 'missing' | 'wrong' | 'expired' };

/** Checks a viewer's credentials, from the query string or (read: token) the player's cookie. */
export function checkRead(name: string, access: AccessConfig, query: URLSearchParams, cookieHeader: string | undefined, nowMs = Date.now()): ReadVerdict {
  switch (access.read) {
    case 'open':
      return { ok: true, via: 'open' };
    case 'token': {
      const fromQuery = query.get('token');
      const presented = fromQuery ?? cookieValue(cookieHeader, tokenCookieName(name));
      if (presented === null || presented === '') return { ok: false, why: 'missing' };
      return secretMatches(presented, access.readToken ?? '') ? { ok: true, via: fromQuery !== null ? 'token' : 'cookie' } : { ok: false, why: 'wrong' };
    }
    case 'signed': {
      const exp = query.get('exp');
      const sig = query.get('sig');
      if (!exp || !sig) return { ok: false, why: 'missing' };
      if (!/^\d{1,12}$/.test(exp)) return { ok: false, why: 'wrong' };
      // The signature first: an attacker learns nothing about expiry from a forged link.
      if (!secretMatches(sig, linkSignature(name, Number(exp), access.signKey ?? ''))) return { ok: false, why: 'wrong' };
      return Number(exp) * 1000 > nowMs ? { ok: true, via: 'signature' } : { ok: false, why: 'expired' };
    }
  }
}
