/** Bytes per second over a sliding window of whole seconds. */
export class RateMeter {
  private readonly buckets = new Float64Array(5);
  private second = 0;

  add(bytes: number): void {
    this.advance();
    this.buckets[this.second % this.buckets.length] += bytes;
  }

  perSecond(): number {
    this.advance();
    let sum = 0;
    // Leave out the second still filling.
    for (let i = 1; i < this.buckets.length; i++) sum += this.buckets[(this.second - i + this.buckets.length) % this.buckets.length];
    return sum / (this.buckets.length - 1);
  }

  private advance(): void {
    const now = Math.floor(Date.now() / 1000);
    if (this.second === 0) this.second = now;
    if (now - this.second >= this.buckets.length) this.buckets.fill(0);
    else for (let s = this.second + 1; s <= now; s++) this.buckets[s % this.buckets.length] = 0;
    this.second = now;
  }
}
