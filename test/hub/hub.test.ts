import { expect } from 'chai';
import { Hub, type ViewerTransport } from '../../src/hub/hub.js';
import { ViewerBudget } from '../../src/hub/viewers.js';
import type { InitSegment } from '../../src/normalizer/init-segment.js';
import type { VersionedInit } from '../../src/stream/events.js';

/** A transport that keeps what it is sent, and reports a backlog the test sets. */
class RecordingTransport implements ViewerTransport {
  constructor(readonly kind: 'http' | 'ws' = 'http') {}
  received: Buffer[] = [];
  pendingBytes = 0;
  closed: string | null = null;
  keepAlives = 0;
  send(data: Buffer): void {
    this.received.push(data);
  }
  sendInit(init: VersionedInit, replacing: boolean): boolean {
    if (replacing) return false;
    this.received.push(init.segment.bytes);
    return true;
  }
  keepAlive(): void {
    this.keepAlives++;
  }
  close(reason: string): void {
    this.closed = reason;
  }
}

const INIT = { bytes: Buffer.from('init'), info: { docType: 'webm', timecodeScale: 1e6, tracks: [{ number: 1, kind: 'video', codecId: 'V_VP8' }], mimeType: 'video/webm; codecs="vp8"' } } as InitSegment;

const AV_INIT = { ...INIT, info: { ...INIT.info, tracks: [...INIT.info.tracks, { number: 2, kind: 'audio', codecId: 'A_OPUS' }] } } as InitSegment;

/** One video frame of `size` bytes; a keyframe starts its own cluster. */
function frame(hub: Hub, size: number, keyframe: boolean): Buffer {
  const data = Buffer.alloc(size, keyframe ? 0x4b : 0x50);
  if (keyframe) hub.clusterStarted({ bytes: Buffer.from('cluster'), seq: 0, timecode: 0, keyframe: true, wallMs: Date.now() });
  hub.block({ parts: [data], track: 1, timecode: 0, keyframe, video: true });
  hub.flush();
  return data;
}

describe('hub', () => {
  let hub: Hub;
  afterEach(() => hub.close('shutdown'));

  it('joins a new viewer at the latest keyframe with the whole GOP since', () => {
    hub = new Hub();
    hub.initChanged({ segment: INIT, version: 1 });
    frame(hub, 100, true);
    frame(hub, 10, false);
    frame(hub, 10, false);
    const viewer = new RecordingTransport();
    hub.add(viewer);
    expect(Buffer.concat(viewer.received).length).to.equal(4 + 7 + 100 + 10 + 10);
  });

  it('tells its chunk joiner how many connected viewers use each transport, so it frames for the most', () => {
    const told: string[] = [];
    hub = new Hub({ joinChunk: (parts, length, viewers) => (told.push(`${viewers.http}/${viewers.ws}`), Buffer.concat(parts as Buffer[], length)) });
    hub.initChanged({ segment: INIT, version: 1 });
    frame(hub, 10, true);
    const ws = [new RecordingTransport('ws'), new RecordingTransport('ws')].map((t) => hub.add(t)!);
    hub.add(new RecordingTransport('http'));
    frame(hub, 10, false);
    hub.remove(ws[0]);
    frame(hub, 10, false);
    hub.remove(ws[0]); // twice: counted once
    hub.remove(ws[1], 'shutdown');
    frame(hub, 10, false);
    expect(told).to.deep.equal(['0/0', '1/2', '1/1', '1/0']);
  });

  it('keeps at most maxGopBytes for joiners; past it they wait for the next keyframe', () => {
    hub = new Hub({ maxGopBytes: 1000 });
    hub.initChanged({ segment: INIT, version: 1 });
    frame(hub, 500, true);
    for (let i = 0; i < 10; i++) frame(hub, 100, false);
    const late = new RecordingTransport();
    hub.add(late);
    expect(late.received.map((b) => b.toString()), 'only the init segment').to.deep.equal(['init']);
    frame(hub, 50, false);
    expect(late.received, 'no frame before a keyframe').to.have.length(1);
    frame(hub, 300, true);
    expect(Buffer.concat(late.received).length).to.equal(4 + 7 + 300);
  });

  it('a viewer past maxQueueBytes skips whole chunks and resumes at a keyframe once drained', () => {
    hub = new Hub({ maxQueueBytes: 1000 });
    hub.initChanged({ segment: INIT, version: 1 });
    const slow = new RecordingTransport();
    hub.add(slow);
    frame(hub, 100, true);
    slow.pendingBytes = 5000;
    frame(hub, 10, false);
    frame(hub, 10, false);
    slow.pendingBytes = 0;
    frame(hub, 10, false);
    expect(hub.stats().skips).to.equal(1);
    const key = frame(hub, 200, true);
    const got = slow.received.map((b) => b.length);
    expect(got, 'init, keyframe cluster, then the next keyframe cluster').to.deep.equal([4, 7 + 100, 7 + 200]);
    expect(slow.received.at(-1)!.subarray(7).equals(key)).to.equal(true);
  });

  it('audio waiting for video leaves with the next keyframe in one write; joiners start at the keyframe', () => {
    hub = new Hub({ join: 'next-keyframe' });
    hub.initChanged({ segment: AV_INIT, version: 1 });
    const live = new RecordingTransport();
    hub.add(live);
    frame(hub, 100, true);
    hub.block({ parts: [Buffer.from('audio')], track: 2, timecode: 0, keyframe: true, video: false });
    hub.flush();
    expect(live.received, 'lone audio waits for video').to.have.length(2);
    const waiting = new RecordingTransport();
    hub.add(waiting);
    const key = frame(hub, 200, true);
    expect(live.received, 'audio and the keyframe cluster in one write').to.have.length(3);
    expect(live.received[2].toString('latin1', 0, 5 + 7)).to.equal('audiocluster');
    expect(live.received[2].subarray(5 + 7).equals(key)).to.equal(true);
    expect(waiting.received.map((b) => b.toString('latin1', 0, 7)), 'init, then from the keyframe cluster on').to.deep.equal(['init', 'cluster']);
    expect(waiting.received[1].length).to.equal(7 + 200);

    const joiner = new RecordingTransport();
    hub.options.join = 'latest-keyframe';
    hub.add(joiner);
    expect(Buffer.concat(joiner.received).toString('latin1', 0, 4 + 7)).to.equal('initcluster');
    expect(Buffer.concat(joiner.received).length).to.equal(4 + 7 + 200);
  });

  it('recover disconnect: a viewer past maxQueueBytes is closed as too slow, the others go on', () => {
    hub = new Hub({ maxQueueBytes: 1000, recover: 'disconnect' });
    hub.initChanged({ segment: INIT, version: 1 });
    const slow = new RecordingTransport();
    const fine = new RecordingTransport();
    hub.add(slow);
    hub.add(fine);
    frame(hub, 100, true);
    slow.pendingBytes = 5000;
    frame(hub, 10, false);
    expect(slow.closed).to.equal('tooSlow');
    expect(hub.stats()).to.include({ slowDisconnects: 1, skips: 0, connections: 1 });
    frame(hub, 10, false);
    expect(fine.received.map((b) => b.length)).to.deep.equal([4, 7 + 100, 10, 10]);
  });

  it('viewer limits: the stream\'s own and the relay\'s budget shared by every stream', () => {
    const budget = new ViewerBudget(3);
    hub = new Hub({ maxViewers: 2 }, budget);
    const other = new Hub({ maxViewers: 10 }, budget);
    try {
      const a = hub.add(new RecordingTransport());
      expect(hub.add(new RecordingTransport())).to.not.equal(null);
      expect(hub.add(new RecordingTransport()), 'the stream is full').to.equal(null);
      expect(other.add(new RecordingTransport()), 'the relay has room for one more').to.not.equal(null);
      expect(other.add(new RecordingTransport()), 'the relay is full').to.equal(null);
      hub.remove(a!);
      expect(other.add(new RecordingTransport()), 'a viewer left').to.not.equal(null);
      expect(hub.stats().rejected + other.stats().rejected).to.equal(2);
      expect(budget.used).to.equal(3);
    } finally {
      other.close('shutdown');
    }
  });

  it('after --producer-grace, a producer with the same tracks makes the stream live again without a new init segment', async () => {
    hub = new Hub({ producerGraceMs: 20 });
    hub.initChanged({ segment: INIT, version: 1 });
    hub.producerStarted();
    frame(hub, 100, true);
    const first = new RecordingTransport();
    hub.add(first);
    hub.producerEnded();
    await new Promise((resolve) => setTimeout(resolve, 60));
    expect(first.closed, 'viewers let go after the grace').to.equal('noProducer');
    expect(hub.live).to.equal(false);
    // The normalizer sends no init segment for a producer whose tracks match the last one's.
    hub.producerStarted();
    expect(hub.live).to.equal(true);
    const next = new RecordingTransport();
    hub.add(next);
    frame(hub, 50, true);
    expect(next.received.map((b) => b.length), 'the kept init segment, then the new keyframe').to.deep.equal([4, 7 + 50]);
  });
  it('tells its pacing from the blocks and sends that pass through it', async () => {
    hub = new Hub();
    hub.initChanged({ segment: INIT, version: 1 });
    expect(hub.pacing.current).to.deep.equal({ waitMs: 0, frameIntervalMs: 0 });
    const send = (timecodes: number[]) => {
      for (const timecode of timecodes) hub.block({ parts: [Buffer.alloc(10)], track: 1, timecode, keyframe: false, video: true });
      hub.flush();
    };
    send([0, 40]);
    await new Promise((r) => setTimeout(r, 300));
    send([80]);
    expect(hub.pacing.current.waitMs).to.be.within(290, 400);
    expect(hub.pacing.current.frameIntervalMs).to.equal(40);
  });
});
