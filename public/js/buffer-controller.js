// Buffer controller: owns the MediaSource and its one SourceBuffer, appends the init
// segment and media through the operation queue, frees what is well behind the playhead,
// and recovers from QuotaExceededError by evicting and retrying.

import { BufferOperationQueue } from './buffer-operation-queue.js';

const DEFAULTS = {
  /** Seconds kept behind currentTime (for a short look back, e.g. after a stall). */
  backBufferSeconds: 15,
  /** Evict once this many seconds beyond backBufferSeconds have piled up (fewer, larger removes). */
  evictSlackSeconds: 5,
  /** On QuotaExceededError keep only this much behind currentTime. */
  quotaBackBufferSeconds: 1,
};

export class BufferController {
  /**
   * @param {HTMLVideoElement} video
   * @param {{ onError: (message: string) => void, onAppended?: () => void }} handlers
   * @param {Partial<typeof DEFAULTS>} options
   */
  constructor(video, handlers, options = {}) {
    this.video = video;
    this.handlers = handlers;
    this.options = { ...DEFAULTS, ...options };
    /** @type {MediaSource | null} */
    this.mediaSource = null;
    /** @type {SourceBuffer | null} */
    this.sourceBuffer = null;
    /** @type {BufferOperationQueue | null} */
    this.queue = null;
    /** Appends that arrived before the SourceBuffer existed. */
    /** @type {ArrayBuffer[]} */
    this.pending = [];
    /** @type {string | null} */
    this.mimeType = null;
    /** Resolves when the current MediaSource is open. */
    this.opened = Promise.resolve();
    this.generation = 0;
    this.quotaErrors = 0;
    this.droppedAppends = 0;
    this.evictions = 0;
  }

  /**
   * Creates a fresh MediaSource and attaches it to the video. Called once early (so that
   * `sourceopen` has happened by the time the stream description arrives) and again to
   * start over. Resolves when it is open.
   */
  attach() {
    this.detach();
    const generation = ++this.generation;
    const mediaSource = new MediaSource();
    this.mediaSource = mediaSource;
    const objectUrl = URL.createObjectURL(mediaSource);
    this.opened = new Promise((resolve) => {
      mediaSource.addEventListener(
        'sourceopen',
        () => {
          URL.revokeObjectURL(objectUrl);
          if (generation === this.generation) resolve(undefined);
        },
        { once: true },
      );
    });
    this.video.src = objectUrl;
    return this.opened;
  }

  detach() {
    this.queue?.close();
    this.queue = null;
    this.sourceBuffer = null;
    this.mediaSource = null;
    this.pending = [];
    this.mimeType = null;
  }

  /**
   * A new stream description: the init segment that follows goes into a new SourceBuffer.
   * Reuses the MediaSource if it has no SourceBuffer yet, otherwise builds a new one.
   * @param {string} mimeType
   */
  async setup(mimeType) {
    if (!this.mediaSource || this.mimeType !== null) this.attach();
    this.mimeType = mimeType;
    const generation = this.generation;
    await this.opened;
    // A newer description came while this MediaSource was opening: that one wins.
    if (generation !== this.generation) return;
    const mediaSource = /** @type {MediaSource} */ (this.mediaSource);
    const sourceBuffer = mediaSource.addSourceBuffer(mimeType);
    // Timestamps come from the stream: the relay keeps them monotonic.
    sourceBuffer.mode = 'segments';
    sourceBuffer.addEventListener('error', () => {
      if (generation === this.generation) this.handlers.onError('the browser could not parse the stream (SourceBuffer error)');
    });
    this.sourceBuffer = sourceBuffer;
    this.queue = new BufferOperationQueue(sourceBuffer, mediaSource);
    const pending = this.pending;
    this.pending = [];
    for (const bytes of pending) this.append(bytes);
  }

  /** Queues an init segment or a media segment. @param {ArrayBuffer} bytes */
  append(bytes) {
    if (!this.queue) {
      this.pending.push(bytes);
      return;
    }
    this.queue.push(this.appendOperation(bytes, 0));
    this.evictBehind();
  }

  /**
   * Runs `execute` on the SourceBuffer in turn with the appends (e.g. `abort()`, setting
   * `timestampOffset`); resolves once it and everything queued before it are done.
   * @param {string} label @param {(sb: SourceBuffer) => void} execute
   * @returns {Promise<void>}
   */
  operation(label, execute) {
    const queue = this.queue;
    if (!queue) return Promise.reject(new Error(`${label}: no SourceBuffer`));
    return new Promise((resolve, reject) => queue.push({ label, execute, onComplete: () => resolve(undefined), onError: reject }));
  }

  /** @param {ArrayBuffer} bytes @param {number} attempt */
  appendOperation(bytes, attempt) {
    return {
      label: `append ${bytes.byteLength} B`,
      execute: (/** @type {SourceBuffer} */ sb) => sb.appendBuffer(bytes),
      onComplete: () => this.handlers.onAppended?.(),
      onError: (/** @type {unknown} */ error) => {
        if (error instanceof DOMException && error.name === 'QuotaExceededError' && this.queue) {
          this.quotaErrors++;
          const behind = this.video.currentTime - this.options.quotaBackBufferSeconds;
          if (attempt < 2 && behind > this.bufferedStart()) {
            // Free what is behind the playhead first, then try the same bytes again.
            this.queue.insertFront(this.appendOperation(bytes, attempt + 1));
            this.queue.insertFront(this.removeOperation(0, behind));
            return;
          }
          // Nothing left to free: drop these bytes. The browser waits for the next keyframe.
          this.droppedAppends++;
          return;
        }
        this.handlers.onError(`appendBuffer failed: ${error instanceof Error ? error.message : String(error)}`);
      },
    };
  }

  /** @param {number} start @param {number} end */
  removeOperation(start, end) {
    return {
      label: `remove ${start.toFixed(2)}-${end.toFixed(2)}`,
      execute: (/** @type {SourceBuffer} */ sb) => {
        if (end > start) sb.remove(start, end);
      },
      onComplete: () => this.evictions++,
    };
  }

  /** Frees what is well behind currentTime. */
  evictBehind() {
    if (!this.queue) return;
    const keepFrom = this.video.currentTime - this.options.backBufferSeconds;
    if (keepFrom - this.bufferedStart() > this.options.evictSlackSeconds) {
      this.queue.push(this.removeOperation(0, keepFrom));
    }
  }

  /** The SourceBuffer's ranges (what the video can play, all tracks together). */
  get buffered() {
    return this.video.buffered;
  }

  bufferedStart() {
    const ranges = this.buffered;
    return ranges.length > 0 ? ranges.start(0) : Infinity;
  }

  bufferedEnd() {
    const ranges = this.buffered;
    return ranges.length > 0 ? ranges.end(ranges.length - 1) : 0;
  }

  /** Seconds buffered in all, and ahead of currentTime. */
  bufferedSeconds() {
    const ranges = this.buffered;
    let total = 0;
    for (let i = 0; i < ranges.length; i++) total += ranges.end(i) - ranges.start(i);
    return total;
  }
}
