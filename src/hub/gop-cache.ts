/**
 * The current GOP as it was sent, from its keyframe cluster on: what a viewer joining
 * at the latest keyframe gets first. Capped in bytes: a producer that sends no
 * keyframe for long would otherwise grow it without end; past the cap it is dropped
 * and joiners wait for the next keyframe, as with `next-keyframe`.
 */
export class GopCache {
  private chunks: Buffer[] = [];
  private bytes = 0;

  constructor(private readonly maxBytes: number) {}

  /** A chunk from a keyframe cluster on begins a new GOP. */
  startGop(fromKeyframe: Buffer): void {
    this.clear();
    this.keep(fromKeyframe);
  }

  /** More of the current GOP. Without one (stream start, or past the cap) there is nothing a joiner could start with. */
  append(data: Buffer): void {
    if (this.chunks.length > 0) this.keep(data);
  }

  get contents(): readonly Buffer[] {
    return this.chunks;
  }

  get empty(): boolean {
    return this.chunks.length === 0;
  }

  clear(): void {
    this.chunks = [];
    this.bytes = 0;
  }

  private keep(data: Buffer): void {
    this.chunks.push(data);
    this.bytes += data.length;
    if (this.bytes > this.maxBytes) this.clear();
  }
}
