import { randomBytes } from 'node:crypto';

/** What an epoch token looks like in a URL: checked before anything else is looked at. */
export const EPOCH_PATTERN = /^[0-9a-z]{1,12}$/;

/**
 * A new epoch token: 48 random bits in base 36. A fresh one is drawn for every init
 * segment, so a new init (other tracks) or a restarted relay (whose sequence numbers
 * start over) never reuses a URL that a cache may still hold with other bytes.
 */
export function newEpoch(): string {
  return randomBytes(6).readUIntBE(0, 6).toString(36);
}
