/**
 * Slows down an address that keeps presenting wrong tokens: after `free` failures
 * within `forgetMs`, every further attempt from it (right or wrong) is answered only
 * after a wait that doubles with each failure, up to `maxDelayMs`; while more than
 * `maxPending` of its attempts wait, new ones are refused at once. A success forgets
 * the address. Memory is bounded by `maxAddresses` (the oldest entry goes first).
 */
export interface ThrottlePolicy {
  free: number;
  baseDelayMs: number;
  maxDelayMs: number;
  forgetMs: number;
  maxPending: number;
  maxAddresses: number;
}

export const DEFAULT_THROTTLE: ThrottlePolicy = { free: 5, baseDelayMs: 500, maxDelayMs: 10_000, forgetMs: 10 * 60_000, maxPending: 8, maxAddresses: 10_000 };

interface Entry {
  failures: number;
  lastFailure: number;
  pending: number;
}

export class FailureThrottle {
  private readonly entries = new Map<string, Entry>();

  constructor(private readonly policy: ThrottlePolicy = DEFAULT_THROTTLE) {}

  /** How long an attempt from `address` waits before it is checked now. */
  delayFor(address: string, now = Date.now()): number {
    const entry = this.current(address, now);
    if (!entry || entry.failures < this.policy.free) return 0;
    return Math.min(this.policy.maxDelayMs, this.policy.baseDelayMs * 2 ** (entry.failures - this.policy.free));
  }

  /** Waits this address's delay; false when too many of its attempts already wait (refuse it: 429). */
  async admit(address: string): Promise<boolean> {
    const delay = this.delayFor(address);
    if (delay === 0) return true;
    const entry = this.entries.get(address)!;
    if (entry.pending >= this.policy.maxPending) return false;
    entry.pending++;
    await new Promise((resolve) => setTimeout(resolve, delay));
    entry.pending--;
    return true;
  }

  fail(address: string, now = Date.now()): void {
    const entry = this.current(address, now) ?? { failures: 0, lastFailure: now, pending: 0 };
    entry.failures++;
    entry.lastFailure = now;
    this.entries.delete(address);
    this.entries.set(address, entry);
    if (this.entries.size > this.policy.maxAddresses) this.entries.delete(this.entries.keys().next().value!);
  }

  succeed(address: string): void {
    const entry = this.entries.get(address);
    if (entry && entry.pending === 0) this.entries.delete(address);
    else if (entry) entry.failures = 0;
  }

  private current(address: string, now: number): Entry | undefined {
    const entry = this.entries.get(address);
    if (entry && now - entry.lastFailure > this.policy.forgetMs && entry.pending === 0) {
      this.entries.delete(address);
      return undefined;
    }
    return entry;
  }
}
