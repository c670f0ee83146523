// Rewind loader: plays the stream from a moment in its rewind window, segment after
// segment, into a MediaSource of its own. The relay's dvr.json lists the window with each
// segment's wall-clock start (src/protocol.ts DvrIndex): the recent part is the live
// segments in the relay's memory, the rest cuts of the recording on disk.
//
// Segments of one timeline (the live segments of one epoch, the cuts of one file) follow
// each other in their own timestamps and are appended as they are. Where the timeline
// changes (disk to memory, one file to the next, a segment that fell out of memory while
// it was being watched) the parser is reset and the next segment is placed with
// `timestampOffset` right where the last one ended; what it repeats of the last one
// (a cut reaches back to its keyframe) is placed over it, so playback goes on without a
// hole in `buffered`.

import { BufferController } from './buffer-controller.js';

const DEFAULTS = {
  /** The next segment is fetched once less than this is buffered ahead of the playhead, s. */
  aheadSeconds: 10,
  /** Seconds kept behind the playhead. */
  backBufferSeconds: 10,
  /** An index younger than this is used again when looking for the next segment, ms. */
  indexMaxAgeMs: 2000,
  /** Segment times that differ by less than this are the same moment, ms. */
  toleranceMs: 300,
  tickMs: 250,
};

/**
 * @typedef {import('../../src/protocol.js').DvrIndex} DvrIndex
 * @typedef {import('../../src/protocol.js').DvrSegment} DvrSegment
 * @typedef {{ placedStart: number, placedEnd: number, startMs: number }} Placed
 */

export class RewindLoader {
  /**
   * @param {HTMLVideoElement} video
   * @param {string} indexUrl the stream's dvr.json
   * @param {URLSearchParams} credentials a protected stream's ?token= or ?exp=&sig=, on every request
   * @param {Partial<typeof DEFAULTS>} [options]
   */
  constructor(video, indexUrl, credentials, options = {}) {
    this.video = video;
    this.indexUrl = indexUrl;
    this.credentials = credentials;
    this.options = { ...DEFAULTS, ...options };
    /** @type {DvrIndex | null} */
    this.index = null;
    this.indexAt = -Infinity;
    /** The relay's clock minus ours, ms (from the index's `now`). */
    this.clockOffsetMs = 0;
    this.generation = 0;
    /** @type {BufferController | null} */
    this.buffer = null;
    /** Where each appended segment sits on the video's timeline, and its wall-clock start. @type {Placed[]} */
    this.placed = [];
    /** @type {{ entry: DvrSegment, offset: number, duration: number } | null} */
    this.last = null;
    /** Wall-clock time (relay clock, ms) where the next segment must begin. */
    this.nextMs = 0;
    this.busy = false;
    this.timer = 0;
    /** Segments fetched, by where the relay had them. */
    this.fetched = { memory: 0, disk: 0 };
    /** Rewinds that got their first segment in place. */
    this.starts = 0;
    /** Timeline changes (a reset of the parser and a new timestampOffset). */
    this.placements = 0;
    /** @type {string | null} */
    this.error = null;
    /** @type {Map<string, ArrayBuffer>} */
    this.inits = new Map();
  }

  /** Now on the relay's clock, ms. */
  now() {
    return Date.now() + this.clockOffsetMs;
  }

  /** @param {string} url relative to the index */
  withCredentials(url) {
    const target = new URL(url, new URL(this.indexUrl, location.href));
    for (const [key, value] of this.credentials) target.searchParams.set(key, value);
    return target.href;
  }

  /** @param {boolean} [fresh] @returns {Promise<DvrIndex>} */
  async fetchIndex(fresh = false) {
    if (!fresh && this.index && performance.now() - this.indexAt < this.options.indexMaxAgeMs) return this.index;
    const asked = Date.now();
    const response = await fetch(this.withCredentials(this.indexUrl));
    if (!response.ok) throw new Error(`dvr.json: HTTP ${response.status}`);
    const index = /** @type {DvrIndex} */ (await response.json());
    // Half the round trip: when the relay wrote `now`, as well as this page can tell. An
    // answer kept by a cache (or by the relay, for up to a second) only makes it look
    // earlier: the largest estimate is the best.
    const offset = index.now - (asked + Date.now()) / 2;
    this.clockOffsetMs = this.index === null ? offset : Math.max(this.clockOffsetMs, offset);
    this.index = index;
    this.indexAt = performance.now();
    return index;
  }

  /**
   * The segment to play at wall-clock time `ms`: of those that hold it, the one that
   * starts last (a segment in memory over a longer cut of the recording); where nothing
   * holds it (a gap in the recording), the next that starts after it.
   * @param {DvrIndex} index @param {number} ms
   */
  pick(index, ms) {
    const at = ms + this.options.toleranceMs;
    /** @type {DvrSegment | null} */
    let best = null;
    for (const s of index.segments) {
      const end = s.duration === null ? Infinity : s.start + s.duration * 1000;
      if (s.start <= at && end > at && (!best || s.start >= best.start)) best = s;
    }
    return best ?? index.segments.find((s) => s.start > ms) ?? null;
  }

  /** Wall-clock time (relay clock, ms) of the picture shown now; null before the first segment. */
  positionMs() {
    const t = this.video.currentTime;
    for (let i = this.placed.length - 1; i >= 0; i--) {
      const p = this.placed[i];
      if (p.placedStart <= t + 0.001) return p.startMs + (t - p.placedStart) * 1000;
    }
    return null;
  }

  /**
   * Plays from wall-clock time `targetMs` (relay clock). Resolves once the first segment
   * is appended and playback was asked to start.
   * @param {number} targetMs
   */
  async start(targetMs) {
    this.stop();
    const generation = ++this.generation;
    this.error = null;
    this.fetched = { memory: 0, disk: 0 };
    this.placements = 0;
    const buffer = new BufferController(this.video, { onError: (message) => (this.error = message) }, { backBufferSeconds: this.options.backBufferSeconds, evictSlackSeconds: 5 });
    this.buffer = buffer;
    void buffer.attach();
    const index = await this.fetchIndex(true);
    if (generation !== this.generation) return;
    if (!index.mimeType) throw new Error('the stream is not live');
    const entry = this.pick(index, targetMs);
    if (!entry) throw new Error('nothing in the rewind window yet');
    await buffer.setup(index.mimeType);
    if (generation !== this.generation) return;
    this.nextMs = entry.start;
    await this.append(entry, generation);
    if (generation !== this.generation) return;
    const first = this.placed[0];
    this.video.currentTime = first.placedStart + Math.max(0, targetMs - entry.start) / 1000;
    this.starts++;
    this.timer = window.setInterval(() => void this.pump(generation), this.options.tickMs);
    await this.video.play().catch(() => {});
  }

  stop() {
    this.generation++;
    clearInterval(this.timer);
    this.timer = 0;
    this.buffer?.detach();
    this.buffer = null;
    this.placed = [];
    this.last = null;
    this.busy = false;
    if (this.video.hasAttribute('src')) {
      this.video.pause();
      this.video.removeAttribute('src');
      this.video.load();
    }
  }

  /** Fetches the next segment when little is buffered ahead. @param {number} generation */
  async pump(generation) {
    const buffer = this.buffer;
    if (this.busy || generation !== this.generation || !buffer || !this.last) return;
    buffer.evictBehind();
    if (buffer.bufferedEnd() - this.video.currentTime > this.options.aheadSeconds) return;
    this.busy = true;
    try {
      let entry = this.pick(await this.fetchIndex(), this.nextMs);
      // Nothing new in the index we have: ask again (the live edge moves on).
      if (!entry || entry.url === this.last.entry.url) entry = this.pick(await this.fetchIndex(true), this.nextMs);
      if (generation !== this.generation) return;
      if (entry && entry.url !== this.last.entry.url) await this.append(entry, generation);
    } catch (error) {
      if (generation === this.generation) this.error = error instanceof Error ? error.message : String(error);
    } finally {
      if (generation === this.generation) this.busy = false;
    }
  }

  /** @param {string} url */
  async get(url) {
    const response = await fetch(this.withCredentials(url));
    if (!response.ok) throw new Error(`${url.split('/').slice(-2).join('/')}: HTTP ${response.status}`);
    return response.arrayBuffer();
  }

  /**
   * Fetches a segment and appends it where it belongs on the video's timeline.
   * @param {DvrSegment} entry @param {number} generation
   */
  async append(entry, generation) {
    const buffer = /** @type {BufferController} */ (this.buffer);
    const index = /** @type {DvrIndex} */ (this.index);
    const [bytes, init] = await Promise.all([
      this.get(entry.url),
      entry.from === 'memory' && index.init ? this.initSegment(index.init) : Promise.resolve(null),
    ]);
    if (generation !== this.generation) return;
    this.fetched[entry.from]++;
    let duration = entry.duration;
    // The segment being produced: read whole, it is complete now, and the index says how long.
    if (duration === null) duration = (await this.fetchIndex(true)).segments.find((s) => s.url === entry.url)?.duration ?? null;
    if (generation !== this.generation) return;
    const last = this.last;
    const follows = last !== null && entry.timeline === last.entry.timeline && Math.abs(entry.media - (last.entry.media + last.duration)) < 0.05;
    let offset;
    if (follows && entry.from === 'memory') {
      offset = last.offset;
    } else {
      // A new timeline, or a cut (each begins with its init segment): reset the parser and place it.
      const placedEnd = last ? last.offset + last.entry.media + last.duration : 0;
      const repeated = last && !follows ? Math.max(0, (this.nextMs - entry.start) / 1000) : 0;
      offset = follows ? last.offset : placedEnd - repeated - entry.media;
      if (!follows) this.placements++;
      await buffer.operation('reset the parser', (sb) => sb.abort());
      await buffer.operation('place the segment', (sb) => (sb.timestampOffset = offset));
      if (init) buffer.append(init);
    }
    buffer.append(bytes);
    await buffer.operation('appended', () => {});
    if (generation !== this.generation) return;
    const placedStart = offset + entry.media;
    if (duration === null) duration = Math.max(0, buffer.bufferedEnd() - placedStart);
    this.placed.push({ placedStart, placedEnd: placedStart + duration, startMs: entry.start });
    // Only what can still be shown is kept.
    while (this.placed.length > 2 && this.placed[1].placedEnd < this.video.currentTime - 60) this.placed.shift();
    this.last = { entry, offset, duration };
    this.nextMs = entry.start + duration * 1000;
  }

  /** @param {string} url */
  async initSegment(url) {
    let init = this.inits.get(url);
    if (!init) {
      init = await this.get(url);
      this.inits.clear();
      this.inits.set(url, init);
    }
    return init;
  }
}
