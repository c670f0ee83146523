import { logger } from '../log.js';
import { SplitterError, WebmSplitter, type SplitterLimits, type WebmBlock, type WebmHeader } from '../webm/splitter.js';

const log = logger('ingest');

/** Why a producer was turned away, for its log line and, over HTTP, its status. */
export interface ProducerRejection {
  /** 400: not a live WebM stream; 415: media browsers cannot play. */
  status: 400 | 415;
  message: string;
}

/** Where a producer session's stream goes: the Stream that owns the producer slot. */
export interface ProducerTarget {
  /** A stream header arrived; returns why it is refused, or null. */
  header(header: WebmHeader, label: string): ProducerRejection | null;
  block(block: WebmBlock): void;
  /** The end of one read from the producer. */
  endOfRead(): void;
  /** The producer has gone (only called if its header was accepted). */
  ended(label: string): void;
}

/**
 * One producer's byte stream on its way into a Stream: a splitter of its own (each
 * producer's stream starts with its own header), then the Stream's normalizer.
 */
export class ProducerSession {
  private readonly splitter: WebmSplitter;
  bytesIn = 0;
  /** Set when the producer sent something that is not a valid live WebM stream. */
  failure: SplitterError | null = null;
  /** Refused, or processing its data threw: ignore the rest of it. */
  private broken = false;
  private started = false;

  constructor(
    /** Names the stream in log lines. */
    private readonly streamName: string,
    /** Names the producer: `tcp ADDR:PORT`, `http ADDR:PORT`, `stdin`, `upstream URL`. */
    readonly label: string,
    private readonly target: ProducerTarget,
    limits: Partial<SplitterLimits>,
    /** Called once when the producer is rejected: the caller should disconnect it. */
    private readonly onRejected: (rejection: ProducerRejection) => void,
  ) {
    this.splitter = new WebmSplitter(
      {
        header: (header) => {
          const refusal = this.target.header(header, label);
          if (refusal) return this.reject(refusal);
          this.started = true;
        },
        cluster: () => {},
        block: (block) => {
          if (!this.broken) this.target.block(block);
        },
        end: () => {},
        error: (error) => {
          this.failure = error;
          if (error.code !== 'TRUNCATED') this.reject({ status: 400, message: `${error.message} [${error.code}]` });
        },
      },
      limits,
    );
  }

  write(chunk: Buffer): void {
    if (this.broken) return;
    this.bytesIn += chunk.length;
    try {
      this.splitter.feed(chunk);
      if (this.started) this.target.endOfRead();
    } catch (error) {
      // A bug reached by one producer's bytes must cost that producer, not every viewer.
      log.error(`${this.streamName}: ${this.label}: disconnected after an internal error: ${(error as Error).stack ?? error}`);
      this.reject({ status: 400, message: `internal error: ${(error as Error).message}` });
    }
  }

  /** The producer has gone: let held blocks out and tell the stream. */
  end(): void {
    if (!this.broken) this.splitter.end();
    if (this.failure?.code === 'TRUNCATED') log.warn(`${this.streamName}: ${this.label}: ended mid-stream: ${this.failure.message}`);
    if (this.started) this.target.ended(this.label);
    this.started = false;
  }

  private reject(rejection: ProducerRejection): void {
    if (this.broken) return;
    this.broken = true;
    log.warn(`${this.streamName}: ${this.label}: rejected: ${rejection.message}`);
    this.onRejected(rejection);
  }
}
