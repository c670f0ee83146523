import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { Normalizer } from '../../src/normalizer/normalizer.js';
import { WebmSplitter } from '../../src/webm/splitter.js';
import { finishUnfinished } from '../../src/record/recovery.js';
import { clusterElement, finishRecording, readLayout, startRecording, type CueEntry } from '../../src/webm/writer.js';
import { ffmpegErrors } from '../helpers/relay.js';
import { gstWebm, mediaDir } from '../helpers/media.js';

interface Written {
  file: string;
  /** File offset where the clusters end. */
  end: number;
  cues: CueEntry[];
  durationTicks: number;
  clusters: number;
}

/**
 * A real GStreamer stream through the relay's splitter and normalizer, written as a
 * recording the way the recorder does: head, then whole clusters of known size.
 */
function writeLive(seconds: number, keyframeInterval: number): Written {
  const media = gstWebm({ seconds, keyframeInterval, audioCodec: 'opus' });
  const file = path.join(mediaDir(), `writer-${seconds}-${keyframeInterval}.webm`);
  const fd = fs.openSync(file, 'w');
  let layout: ReturnType<typeof startRecording>['layout'] | null = null;
  let offset = 0;
  let start = -1;
  let last = 0;
  const cues: CueEntry[] = [];
  let cluster: { timecode: number; keyframe: boolean; parts: Buffer[] } | null = null;
  let clusters = 0;
  const writeCluster = () => {
    if (!cluster || !layout) return;
    const parts = clusterElement(cluster.timecode, cluster.parts);
    if (cluster.keyframe) cues.push({ timecode: cluster.timecode, offset });
    for (const part of parts) offset += fs.writeSync(fd, part, 0, part.length, offset);
    clusters++;
  };
  const normalizer = new Normalizer({
    init: (segment) => {
      const started = startRecording(segment.bytes, Date.UTC(2026, 10, 29, 10, 0, 0));
      layout = started.layout;
      offset += fs.writeSync(fd, started.head, 0, started.head.length, 0);
    },
    cluster: (_bytes, timecode, keyframe) => {
      writeCluster();
      if (start < 0) start = timecode;
      cluster = { timecode: timecode - start, keyframe, parts: [] };
    },
    block: (parts, _track, timecode) => {
      cluster?.parts.push(Buffer.concat(parts));
      last = Math.max(last, timecode - start);
    },
    flush: () => {},
  });
  const splitter = new WebmSplitter({
    header: (h) => normalizer.header(h),
    cluster: () => {},
    block: (b) => normalizer.block(b),
    end: () => {},
    error: (e) => {
      throw e;
    },
  });
  splitter.feed(media.bytes);
  splitter.end();
  normalizer.flush();
  writeCluster();
  fs.closeSync(fd);
  return { file, end: offset, cues, durationTicks: last + 33, clusters };
}

function finish(written: Written): void {
  const head = Buffer.alloc(64 << 10);
  const fd = fs.openSync(written.file, 'r+');
  const read = fs.readSync(fd, head, 0, head.length, 0);
  const layout = readLayout(head.subarray(0, read));
  expect(layout, 'layout of the unfinished file').to.not.equal(null);
  expect(layout!.finished).to.equal(false);
  const { at, tail, patches } = finishRecording(layout!, written.cues, written.durationTicks, written.end);
  fs.writeSync(fd, tail, 0, tail.length, at);
  for (const patch of patches) fs.writeSync(fd, patch.bytes, 0, patch.bytes.length, patch.offset);
  fs.closeSync(fd);
}

const probe = (file: string) =>
  JSON.parse(execFileSync('ffprobe', ['-v', 'error', '-show_entries', 'format=duration,start_time', '-of', 'json', file], { encoding: 'utf8' })) as {
    format: { duration: string; start_time: string };
  };

describe('WebM writer (recordings)', function () {
  this.timeout(60_000);

  it('writes a file that plays while unfinished, and is seekable with Duration, Cues and SeekHead once finished', () => {
    const written = writeLive(6, 30);
    expect(written.cues.length, 'keyframe clusters').to.be.within(5, 7);
    // Unfinished: a live WebM (Segment of unknown size) that decodes from its start.
    expect(ffmpegErrors(fs.readFileSync(written.file))).to.deep.equal([]);
    finish(written);

    const bytes = fs.readFileSync(written.file);
    const layout = readLayout(bytes.subarray(0, 65536))!;
    expect(layout.finished).to.equal(true);
    expect(layout.durationTicks).to.equal(written.durationTicks);
    expect(layout.startMs).to.equal(Date.UTC(2026, 10, 29, 10, 0, 0));

    const info = execFileSync('mkvinfo', ['--all', written.file], { encoding: 'utf8' });
    expect(info).to.match(/\+ Seek head/);
    expect(info).to.match(/\| \+ Duration: 00:00:0[56]\./);
    expect(info).to.match(/\+ Cues/);
    expect(info.match(/\| \+ Cue point/g)?.length).to.equal(written.cues.length);
    expect(info).to.not.match(/(Error|Warning|unknown size)/i);

    const format = probe(written.file).format;
    expect(Number(format.duration)).to.be.within(5.5, 6.2);
    expect(Number(format.start_time)).to.be.lessThan(0.05);
    expect(ffmpegErrors(bytes)).to.deep.equal([]);

    // Seeking through the Cues: ffmpeg starts decoding at the keyframe before 3 s.
    const seeked = execFileSync('ffprobe', ['-v', 'error', '-read_intervals', '3%+0.5', '-select_streams', 'v', '-show_entries', 'packet=pts_time,flags', '-of', 'csv=p=0', written.file], {
      encoding: 'utf8',
    }).trim().split('\n');
    const [firstTime, firstFlags] = seeked[0].split(',');
    expect(firstFlags).to.contain('K');
    expect(Number(firstTime)).to.be.within(1.9, 3.01);
  });

  it('a file cut in the middle of a cluster is recognised as unfinished', () => {
    const written = writeLive(3, 30);
    const size = fs.statSync(written.file).size;
    fs.truncateSync(written.file, size - 1000);
    const head = fs.readFileSync(written.file).subarray(0, 65536);
    const layout = readLayout(head);
    expect(layout?.finished).to.equal(false);
    expect(layout?.firstClusterOffset).to.be.greaterThan(0);
  });

  it('recovery cuts a file torn inside a cluster after its last whole cluster and finishes it', async () => {
    const written = writeLive(4, 15);
    const size = fs.statSync(written.file).size;
    // Torn 1000 bytes before the end: inside the last cluster.
    fs.truncateSync(written.file, size - 1000);
    const result = await finishUnfinished(written.file);
    expect(result.kind).to.equal('finished');
    if (result.kind !== 'finished') return;
    expect(result.clusters).to.equal(written.clusters - 1);
    expect(result.cutBytes).to.be.greaterThan(0);
    expect(result.durationS).to.be.within(3.0, 3.9);
    const bytes = fs.readFileSync(written.file);
    const layout = readLayout(bytes.subarray(0, 65536))!;
    expect(layout.finished).to.equal(true);
    expect(ffmpegErrors(bytes)).to.deep.equal([]);
    const info = execFileSync('mkvinfo', ['--all', written.file], { encoding: 'utf8' });
    expect(info.match(/\| \+ Cue point/g)?.length).to.equal(written.cues.length - 1);
    expect(Number(probe(written.file).format.duration)).to.be.within(3.0, 3.9);
    // A second run leaves a finished file alone.
    expect((await finishUnfinished(written.file)).kind).to.equal('already-finished');
  });
});
