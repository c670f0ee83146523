// One serialised queue of SourceBuffer operations (after hls.js's buffer-operation-queue).
// A SourceBuffer takes one appendBuffer/remove at a time, and only when it is not `updating`;
// everything that touches the buffer goes through here, in order.

/**
 * @typedef {object} BufferOperation
 * @property {string} label                      for logs
 * @property {(sb: SourceBuffer) => void} execute starts the operation (appendBuffer or remove)
 * @property {() => void} [onComplete]           after its updateend
 * @property {(error: unknown) => void} [onError] when execute threw; may queue new operations with insertFront
 */

export class BufferOperationQueue {
  /** @param {SourceBuffer} sourceBuffer @param {MediaSource} mediaSource */
  constructor(sourceBuffer, mediaSource) {
    this.sourceBuffer = sourceBuffer;
    this.mediaSource = mediaSource;
    /** @type {BufferOperation[]} */
    this.queue = [];
    /** The operation the SourceBuffer is working on (between execute and updateend). */
    /** @type {BufferOperation | null} */
    this.current = null;
    this.closed = false;
    this.onUpdateEnd = () => {
      const done = this.current;
      this.current = null;
      done?.onComplete?.();
      this.run();
    };
    sourceBuffer.addEventListener('updateend', this.onUpdateEnd);
  }

  get length() {
    return this.queue.length + (this.current ? 1 : 0);
  }

  /** @param {BufferOperation} operation */
  push(operation) {
    this.queue.push(operation);
    this.run();
  }

  /** Runs `operation` before anything already waiting (e.g. an eviction before a retried append). */
  /** @param {BufferOperation} operation */
  insertFront(operation) {
    this.queue.unshift(operation);
  }

  /** Drops everything waiting; the SourceBuffer is going away. */
  close() {
    this.closed = true;
    this.queue = [];
    this.sourceBuffer.removeEventListener('updateend', this.onUpdateEnd);
  }

  run() {
    while (!this.closed && !this.current && !this.sourceBuffer.updating && this.queue.length > 0) {
      if (this.mediaSource.readyState !== 'open') return;
      const operation = /** @type {BufferOperation} */ (this.queue.shift());
      try {
        this.current = operation;
        operation.execute(this.sourceBuffer);
      } catch (error) {
        this.current = null;
        if (operation.onError) operation.onError(error);
        else console.warn(`buffer: ${operation.label} failed`, error);
        // Loop: onError may have queued a retry at the front.
        continue;
      }
      // An operation that did not start an update (nothing to remove) completes at once.
      if (!this.sourceBuffer.updating) {
        this.current = null;
        operation.onComplete?.();
      }
    }
  }
}
