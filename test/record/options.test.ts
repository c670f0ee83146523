import fs from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { loadConfigFile } from '../../src/config/file.js';
import { helpText, parseConfig } from '../../src/config/flags.js';
import { ConfigError, dvrWindowOf, type RelayConfig } from '../../src/config/options.js';
import { compareRecordingNames, recordingFileName } from '../../src/record/recorder.js';
import { tempDir } from './common.js';

const parse = (argv: string[]) => parseConfig(argv, {}) as RelayConfig;

describe('Recording options and file names', () => {
  it('--record DIR records the flag-configured stream into DIR/live with its retention', () => {
    const config = parse(['--record', '/srv/rec', '--record-segment', '600', '--record-keep', '86400', '--record-max-bytes', '2G']);
    expect(config.streams[0].record).to.deep.equal({ dir: '/srv/rec/live', segmentS: 600, keepS: 86400, maxBytes: 2 * 2 ** 30, maxQueueBytes: 32 << 20 });
    expect(parse(['--record', '/x', '--record-queue', '256K']).streams[0].record?.maxQueueBytes).to.equal(256 << 10);
    expect(parse([]).streams[0].record).to.equal(null);
    expect(parse(['--record', 'false']).streams[0].record).to.equal(null);
    expect(parse(['--record', 'true', '--record-dir', '/data']).streams[0].record?.dir).to.equal('/data/live');
    expect(() => parse(['--record', '/x', '--record-segment', '0'])).to.throw(ConfigError, /--record-segment/);
    expect(() => parse(['--record', '/x', '--record-max-bytes', 'lots'])).to.throw(ConfigError, /--record-max-bytes/);
    for (const option of ['--record DIR', '--record-dir DIR', '--record-segment S', '--record-keep S', '--record-max-bytes BYTES', '--record-queue BYTES', '--dvr-window S']) {
      expect(helpText()).to.contain(option);
    }
  });

  it('dvr-window: 30 min when recorded, else the segment window, which also bounds it', () => {
    const window = (argv: string[]) => dvrWindowOf(parse(argv).streams[0]);
    expect(window(['--record', '/x'])).to.equal(1800);
    expect(window(['--record', '/x', '--dvr-window', '600'])).to.equal(600);
    expect(window([])).to.equal(60);
    expect(window(['--segment-window', '20'])).to.equal(20);
    expect(window(['--segment-window', '20', '--dvr-window', '10'])).to.equal(10);
    expect(window(['--segment-window', '20', '--dvr-window', '600'])).to.equal(20);
    expect(window(['--dvr-window', '0'])).to.equal(0);
  });

  it('in a config file: record: true into record-dir, defaults at the top, a directory per stream', () => {
    const dir = tempDir('options');
    const file = path.join(dir, 'relay.yml');
    fs.writeFileSync(
      file,
      ['record-dir: /var/rec', 'record: true', 'record-keep: 3600', 'streams:', '  a:', '    encoder:', '  b:', '    encoder:', '    record: false', '  c:', '    encoder:', '    record: /elsewhere', '    record-segment: 60', ''].join('\n'),
    );
    const config = loadConfigFile(file);
    const byName = Object.fromEntries(config.streams.map((s) => [s.name, s.record]));
    expect(byName.a).to.deep.include({ dir: '/var/rec/a', segmentS: 3600, keepS: 3600, maxBytes: null });
    expect(byName.b).to.equal(null);
    expect(byName.c).to.deep.include({ dir: '/elsewhere/c', segmentS: 60, keepS: 3600 });
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('names files by their UTC start, and orders a second file of the same second after the first', () => {
    const at = Date.UTC(2026, 10, 29, 10, 0, 0, 250);
    expect(recordingFileName(at)).to.equal('2026-11-29T10-00-00Z.webm');
    expect(recordingFileName(at, 2)).to.equal('2026-11-29T10-00-00Z-2.webm');
    const names = ['2026-11-29T10-00-00Z-2.webm', '2026-11-29T10-00-01Z.webm', '2026-11-29T10-00-00Z.webm', '2026-11-29T10-00-00Z-10.webm'];
    expect(names.sort(compareRecordingNames)).to.deep.equal(['2026-11-29T10-00-00Z.webm', '2026-11-29T10-00-00Z-2.webm', '2026-11-29T10-00-00Z-10.webm', '2026-11-29T10-00-01Z.webm']);
  });
});
