import { createHash, timingSafeEqual } from 'node:crypto';

/** Compares a presented Bearer token with the secret without leaking, through timing, how much matched. */
export function bearerMatches(header: string | undefined, secret: string): boolean {
  const presented = /^Bearer\s+(\S+)$/i.exec(header ?? '')?.[1] ?? '';
  const digest = (text: string) => createHash('sha256').update(text).digest();
  return timingSafeEqual(digest(presented), digest(secret));
}
