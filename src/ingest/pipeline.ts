import type { Hub } from '../hub/hub.js';
import { logger } from '../log.js';
import type { Normalizer } from '../normalizer/normalizer.js';
import { SplitterError, WebmSplitter, type SplitterLimits } from '../webm/splitter.js';

const log = logger('ingest');

/**
 * One producer's byte stream on its way to the viewers: splitter, then the shared
 * normalizer and hub. Each producer gets a fresh splitter (its stream starts with
 * its own header); the normalizer carries timestamps across producers.
 */
export class ProducerSession {
  private readonly splitter: WebmSplitter;
  bytesIn = 0;
  /** Set when the producer sent something that is not a valid live WebM stream. */
  failure: SplitterError | null = null;
  /** Processing this producer's data threw: ignore the rest of it. */
  private broken = false;

  constructor(
    readonly label: string,
    private readonly normalizer: Normalizer,
    private readonly hub: Hub,
    limits: Partial<SplitterLimits>,
    /** Called once when the producer's data is rejected: the caller should disconnect it. */
    private readonly onBadData: (error: SplitterError) => void,
    /** Called for each stream header the producer sends. */
    onStream: () => void,
  ) {
    this.splitter = new WebmSplitter(
      {
        header: (header) => {
          log.info(`${label}: stream ${header.info.mimeType}, ${describeTracks(header.info.tracks)}`);
          this.normalizer.header(header);
          this.hub.producerStarted();
          onStream();
        },
        cluster: () => {},
        block: (block) => this.normalizer.block(block),
        end: () => {},
        error: (error) => {
          this.failure = error;
          if (error.code !== 'TRUNCATED') {
            log.warn(`${label}: rejected: ${error.message} [${error.code}]`);
            this.onBadData(error);
          }
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
      this.hub.flush();
    } catch (error) {
      // A bug reached by one producer's bytes must cost that producer, not every viewer.
      log.error(`${this.label}: disconnected after an internal error: ${(error as Error).stack ?? error}`);
      this.broken = true;
      this.onBadData(new SplitterError('BAD_BLOCK', `internal error: ${(error as Error).message}`, this.bytesIn));
    }
  }

  /** The producer has gone: let held blocks out and tell the hub. */
  end(): void {
    this.splitter.end();
    if (this.failure?.code === 'TRUNCATED') log.warn(`${this.label}: ended mid-stream: ${this.failure.message}`);
    this.normalizer.flush();
    this.hub.producerEnded();
  }
}

function describeTracks(tracks: { kind: string; codecId: string; width?: number; height?: number; sampleRate?: number }[]): string {
  return tracks
    .map((t) => (t.kind === 'video' ? `${t.codecId} ${t.width}x${t.height}` : t.kind === 'audio' ? `${t.codecId} ${t.sampleRate} Hz` : t.codecId))
    .join(', ');
}
