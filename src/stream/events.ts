import type { InitSegment } from '../normalizer/init-segment.js';
import type { CloseReason } from '../protocol.js';

/**
 * The stage contract. A `Stream` publishes one complete, ordered sequence of these
 * events to each of its sinks; a sink sees nothing that did not come through here.
 *
 *   producerStarted  (initChanged)? (clusterStarted (block)*)* flush ... producerEnded
 *
 * - `initChanged` comes before the first cluster, and again whenever a producer's
 *   tracks differ from the running stream's (its version then goes up). A producer
 *   whose tracks match continues the stream: no new init, timestamps go on.
 * - `flush` ends one ingest read: what came since the last flush may go out now.
 * - Buffers handed to a sink are shared with every other sink: never modify them.
 * - A sink must not block or throw: the hub never waits for the disk, the recorder
 *   never waits for a viewer. Slow work is queued by the sink itself, bounded.
 */
export interface StreamSink {
  /** A new init segment (EBML header, live Segment, Info, Tracks). */
  initChanged(init: VersionedInit): void;
  /** A Cluster begins; blocks that follow belong to it. */
  clusterStarted(cluster: ClusterEvent): void;
  /** A block of the current cluster, its relative timecode already rewritten. */
  block(block: BlockEvent): void;
  /** The end of one ingest read. */
  flush(): void;
  /** A producer has connected and sent a valid header (`label` names it for logs). */
  producerStarted(label: string): void;
  /** The producer has gone; held media has been flushed before this. */
  producerEnded(label: string): void;
  /** The stream is being removed (relay shutdown): release timers and connections. */
  close(reason: CloseReason): void;
}

export interface VersionedInit {
  segment: InitSegment;
  /** 1 for the stream's first init segment, +1 for each change of tracks. */
  version: number;
}

export interface ClusterEvent {
  /** Cluster ID, unknown size and Timecode: the bytes that start it on the wire. */
  bytes: Buffer;
  /** Numbers every cluster of the stream, from 0, never reused while the process runs. */
  seq: number;
  /** Cluster timecode in ticks of the init segment's timecode scale. */
  timecode: number;
  /** Starts with a video keyframe (audio-only streams: every cluster): a viewer may join here. */
  keyframe: boolean;
  /** When its first frame happened, ms since 1970 (UTC): see StreamClock. Every sink places it there. */
  wallMs: number;
}

export interface BlockEvent {
  /** The whole SimpleBlock or BlockGroup element, as slices (usually one). */
  parts: Buffer[];
  track: number;
  /** Absolute timestamp in ticks. */
  timecode: number;
  keyframe: boolean;
  /** A block of a video track. */
  video: boolean;
}
