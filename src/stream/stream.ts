import type { Readable } from 'node:stream';
import type { StreamConfig } from '../config/options.js';
import type { ChunkJoiner } from '../hub/batcher.js';
import { Hub } from '../hub/hub.js';
import type { ViewerBudget } from '../hub/viewers.js';
import { UpstreamPull } from '../ingest/pull.js';
import { TcpIngest } from '../ingest/tcp.js';
import { logger } from '../log.js';
import { Segmenter } from '../segments/segmenter.js';
import { Recorder } from '../record/recorder.js';
import type { InitSegment } from '../normalizer/init-segment.js';
import { Normalizer, type NormalizedStream } from '../normalizer/normalizer.js';
import type { StreamStats, StreamSummary, TrackDescription } from '../protocol.js';
import { encoderArgs } from '../source/gst-args.js';
import { Supervisor } from '../source/supervisor.js';
import type { TrackInfo } from '../webm/header.js';
import type { WebmBlock, WebmHeader } from '../webm/splitter.js';
import { StreamClock } from './clock.js';
import type { StreamSink, VersionedInit } from './events.js';
import { checkPlayable } from './playable.js';
import { ProducerSession, type ProducerRejection, type ProducerTarget } from './producer-session.js';

export interface StreamContext {
  /** Viewers of all streams together. */
  budget: ViewerBudget;
  gstLaunch: string;
  /** The stream cannot go on (its encoder cannot start): the relay decides what that means. */
  fatal(message: string): void;
  /** How the hub joins the chunks it sends viewers (default: Buffer.concat). */
  joinChunk?: ChunkJoiner;
}

/**
 * One named stream: its producer slot (encoder, TCP, PUT, stdin or upstream), the
 * normalizer every producer's blocks go through, and the sinks that get the
 * resulting events (the viewers' hub first). Streams share nothing but the relay's
 * viewer budget: what a producer of one does is not seen by another.
 */
export class Stream {
  readonly name: string;
  readonly hub: Hub;
  /** The stream as numbered segments for HTTP caches (`/<name>/index.json`). */
  readonly segments: Segmenter;
  /** Writes the stream to disk (`record`), or null. */
  readonly recorder: Recorder | null;
  private readonly sinks: StreamSink[] = [];
  private readonly normalizer: Normalizer;
  private session: ProducerSession | null = null;
  /** Tracks of the current producer that viewers do not get (subtitles, data). */
  private droppedTracks = new Set<number>();
  private videoTracks = new Set<number>();
  private clusterSeq = 0;
  private readonly clock = new StreamClock();
  private initVersion = 0;
  private current: VersionedInit | null = null;
  private liveSince: number | null = null;
  private tcp: TcpIngest | null = null;
  private pull: UpstreamPull | null = null;
  encoder: Supervisor | null = null;
  private stopped = false;
  private readonly counts = { producers: 0, refused: 0, rejected: 0, bytesIn: 0 };
  /** Refused credentials, counted by the server (src/server) for the stats and metrics. */
  readonly accessFailures = { read: 0, publish: 0 };

  constructor(
    readonly config: StreamConfig,
    private readonly context: StreamContext,
  ) {
    this.name = config.name;
    const limits = config.limits;
    this.hub = new Hub(
      {
        join: limits.join,
        recover: limits.recover,
        maxViewers: limits.maxViewers,
        maxQueueBytes: limits.maxQueueBytes,
        stallTimeoutMs: limits.stallTimeoutMs,
        producerGraceMs: limits.producerGraceMs,
        ...(context.joinChunk ? { joinChunk: context.joinChunk } : {}),
      },
      context.budget,
    );
    this.sinks.push(this.hub);
    this.segments = new Segmenter({ windowSeconds: limits.segmentWindowS });
    this.sinks.push(this.segments);
    this.recorder = config.record ? new Recorder(this.name, config.record) : null;
    if (this.recorder) this.sinks.push(this.recorder);
    this.normalizer = new Normalizer(this.normalizedOut);
  }

  /** Another consumer of this stream's events (a segmenter, a recorder). */
  addSink(sink: StreamSink): void {
    this.sinks.push(sink);
    if (this.current) sink.initChanged(this.current);
  }

  get init(): VersionedInit | null {
    return this.current;
  }

  /** Whether a producer is attached now. */
  get producing(): boolean {
    return this.session !== null;
  }

  get live(): boolean {
    return this.hub.live;
  }

  // --- producers --------------------------------------------------------------------

  /**
   * Takes a producer's byte stream unless another is active (then returns false and
   * logs the refusal). `disconnect` is called when its data is rejected.
   */
  readonly attach = (stream: Readable, label: string, disconnect: (rejection: ProducerRejection) => void): boolean => {
    const who = `${this.name}: ${label}`;
    if (this.session || this.stopped) {
      this.counts.refused++;
      log.warn(`${who}: refused: ${this.session ? `${this.session.label} is already producing` : 'shutting down'}`);
      return false;
    }
    const session = new ProducerSession(this.name, label, this.producerTarget, { maxHeaderSize: this.config.limits.maxHeaderBytes, maxElementSize: this.config.limits.maxElementBytes }, (rejection) => {
      this.counts.rejected++;
      disconnect(rejection);
    });
    this.session = session;
    this.counts.producers++;
    log.info(`${who}: producer connected`);
    stream.on('data', (chunk: Buffer) => session.write(chunk));
    let finished = false;
    const finish = (why: string) => {
      if (finished) return;
      finished = true;
      session.end();
      this.counts.bytesIn += session.bytesIn;
      if (this.session === session) this.session = null;
      log.info(`${who}: producer ${why} after ${session.bytesIn} bytes`);
    };
    stream.once('end', () => finish('ended'));
    stream.once('close', () => finish('disconnected'));
    stream.once('error', (error) => finish(`failed (${error.message})`));
    return true;
  };

  private readonly producerTarget: ProducerTarget = {
    header: (header: WebmHeader, label: string): ProducerRejection | null => {
      const verdict = checkPlayable(header);
      if (!verdict.ok) return { status: 415, message: verdict.reason };
      for (const track of verdict.dropped) log.info(`${this.name}: ${label}: track ${track.number} (${track.codecId}) left out: viewers get audio and video only`);
      this.droppedTracks = new Set(verdict.dropped.map((t) => t.number));
      this.clock.restart();
      log.info(`${this.name}: ${label}: stream ${verdict.header.info.mimeType}, ${describeTracks(verdict.header.info.tracks)}`);
      this.normalizer.header(verdict.header);
      if (this.liveSince === null) this.liveSince = Date.now();
      for (const sink of this.sinks) sink.producerStarted(label);
      this.encoder?.markDelivered();
      return null;
    },
    block: (block: WebmBlock) => {
      if (!this.droppedTracks.has(block.track)) this.normalizer.block(block);
    },
    endOfRead: () => {
      for (const sink of this.sinks) sink.flush();
    },
    ended: (label: string) => {
      this.normalizer.flush();
      this.liveSince = null;
      for (const sink of this.sinks) {
        sink.flush();
        sink.producerEnded(label);
      }
    },
  };

  /** The normalizer's output, numbered and handed to every sink. */
  private readonly normalizedOut: NormalizedStream = {
    init: (segment: InitSegment) => {
      this.current = { segment, version: ++this.initVersion };
      this.clock.restart(segment.info.timecodeScale);
      this.videoTracks = new Set(segment.info.tracks.filter((t) => t.kind === 'video').map((t) => t.number));
      for (const sink of this.sinks) sink.initChanged(this.current);
    },
    cluster: (bytes: Buffer, timecode: number, keyframe: boolean) => {
      const event = { bytes, seq: this.clusterSeq++, timecode, keyframe, wallMs: this.clock.place(timecode, keyframe) };
      for (const sink of this.sinks) sink.clusterStarted(event);
    },
    block: (parts: Buffer[], track: number, timecode: number, keyframe: boolean) => {
      const event = { parts, track, timecode, keyframe, video: this.videoTracks.has(track) };
      for (const sink of this.sinks) sink.block(event);
    },
    // A video frame the normalizer held for its successor and let go by its timer, outside an ingest read.
    flush: () => {
      for (const sink of this.sinks) sink.flush();
    },
  };

  /** Opens the stream's producer side: binds its ingest port, spawns its encoder, starts pulling. */
  async start(): Promise<void> {
    const producer = this.config.producer;
    switch (producer.kind) {
      case 'encoder': {
        // The encoder connects to a port of our own that only this machine can reach.
        this.tcp = new TcpIngest(this.attach);
        const port = await this.tcp.listen('127.0.0.1', 0, `${this.name} (encoder)`);
        if (this.stopped) return;
        const args = encoderArgs(producer.encoder, port);
        log.info(`${this.name}: encoder: ${this.context.gstLaunch} ${args.join(' ')}`);
        this.encoder = new Supervisor({ command: this.context.gstLaunch, args, label: this.name });
        this.encoder.on('fatal', (message: string) => this.context.fatal(`${this.name}: ${message}`));
        this.encoder.start();
        break;
      }
      case 'tcp':
        this.tcp = new TcpIngest(this.attach);
        await this.tcp.listen(producer.host, producer.port, this.name);
        break;
      case 'stdin':
        this.attach(process.stdin, 'stdin', () => process.stdin.destroy());
        process.stdin.once('end', () => log.info(`${this.name}: standard input ended`));
        break;
      case 'pull':
        this.pull = new UpstreamPull(producer.url, this.attach, { readTimeoutMs: this.config.limits.upstreamTimeoutMs });
        this.pull.start();
        break;
      case 'publish':
        break;
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const sink of this.sinks) sink.close('shutdown');
    this.pull?.stop();
    await Promise.all([this.encoder?.stop(), this.tcp?.close(), this.recorder?.settled()]);
  }

  // --- state ------------------------------------------------------------------------

  tracks(): TrackDescription[] {
    return this.current ? describeTrackList(this.current.segment.info.tracks) : [];
  }

  /** `access`: whether the one asking may watch (a protected stream is listed without its picture otherwise). */
  summary(access = true): StreamSummary {
    const hub = this.hub.stats();
    const name = encodeURIComponent(this.name);
    return {
      name: this.name,
      live: hub.live,
      mimeType: this.current?.segment.info.mimeType ?? null,
      tracks: this.tracks(),
      viewers: hub.viewers,
      bitrate: hub.bitrate,
      uptimeSeconds: this.uptimeSeconds(),
      read: this.config.access.read,
      access,
      urls: {
        player: `${name}/`,
        webm: `${name}.webm`,
        websocket: name,
        snapshot: access ? `${name}/snapshot.jpg` : null,
        publish: this.config.publishToken ? `${name}/publish` : null,
      },
    };
  }

  private uptimeSeconds(): number | null {
    return this.liveSince === null || !this.hub.live ? null : Math.round((Date.now() - this.liveSince) / 1000);
  }

  stats(): StreamStats {
    const hub = this.hub.stats();
    const restarts = this.encoder?.restarts ?? 0;
    return {
      name: this.name,
      ...hub,
      mimeType: this.current?.segment.info.mimeType ?? null,
      tracks: this.tracks(),
      uptimeSeconds: this.uptimeSeconds(),
      ingest: {
        state: this.session ? 'receiving' : 'waiting',
        producer: this.session?.label ?? null,
        ...this.counts,
        bytesIn: this.counts.bytesIn + (this.session?.bytesIn ?? 0),
      },
      normalizer: { ...this.normalizer.stats },
      encoder: this.encoder ? { pid: this.encoder.pid ?? null, restarts } : null,
      encoderRestarts: restarts,
      segments: this.segments.stats(),
      recording: this.recorder?.stats() ?? null,
      accessFailures: { ...this.accessFailures },
      upstream: this.pull?.stats() ?? null,
    };
  }

  /** Edge: why the upstream is not delivering, for /healthz; null when it is (or for other producers). */
  get upstreamTrouble(): string | null {
    return this.pull?.trouble ?? null;
  }
}

const log = logger('ingest');

export function describeTrackList(tracks: readonly TrackInfo[]): TrackDescription[] {
  return tracks.map((t) => ({
    number: t.number,
    kind: t.kind,
    codec: t.mseCodec ?? t.codecId,
    width: t.width,
    height: t.height,
    sampleRate: t.sampleRate,
    channels: t.channels,
  }));
}

function describeTracks(tracks: readonly TrackInfo[]): string {
  return tracks
    .map((t) => (t.kind === 'video' ? `${t.codecId} ${t.width}x${t.height}` : t.kind === 'audio' ? `${t.codecId} ${t.sampleRate} Hz` : t.codecId))
    .join(', ');
}
