/**
 * The configuration, parsed in-process: flags describe one stream "live", a YAML file
 * names several; every mistake names its file, line and key. (The CLI's exit code 2
 * for the same mistakes is tested with the real process in test/streams.)
 */
import { expect } from 'chai';
import path from 'node:path';
import { parseConfig } from '../../src/config/flags.js';
import { ConfigError, DEFAULT_LIMITS, type RelayConfig } from '../../src/config/options.js';
import { ROOT } from '../helpers/relay.js';
import { tempDir, writeConfig } from '../helpers/streams.js';

const parse = (argv: string[]) => parseConfig(argv, {}) as RelayConfig;
function fails(argv: string[], pattern: RegExp): void {
  expect(() => parseConfig(argv, {})).to.throw(ConfigError, pattern);
}

describe('config', () => {
  it('flags alone describe one stream named live, with the limits of the flags', () => {
    const config = parse(['--max-viewers', '7', '--join', 'next-keyframe', '--recover', 'disconnect', '--ingest', 'tcp://127.0.0.1:9002']);
    expect(config.streams.map((s) => s.name)).to.deep.equal(['live']);
    expect(config.maxViewers).to.equal(7);
    expect(config.streams[0].limits).to.include({ maxViewers: 7, join: 'next-keyframe', recover: 'disconnect' });
    expect(config.streams[0].producer).to.deep.equal({ kind: 'tcp', host: '127.0.0.1', port: 9002 });
    expect(parse([]).streams[0].producer.kind).to.equal('encoder');
    expect(parse(['--ingest', 'http://origin:9001/lobby.webm']).streams[0].producer).to.deep.equal({ kind: 'pull', url: 'http://origin:9001/lobby.webm' });
  });

  it('the example file: five streams, one producer each, top-level defaults and per-stream overrides', () => {
    const config = parse(['--config', path.join(ROOT, 'webm-relay.example.yml'), '--port', '0']);
    expect(config.port, 'a relay-wide flag wins over the file').to.equal(0);
    expect(config.maxViewers).to.equal(2000);
    expect(config.streams.map((s) => [s.name, s.producer.kind])).to.deep.equal([
      ['lobby', 'encoder'],
      ['screen', 'encoder'],
      ['stage', 'tcp'],
      ['guest', 'publish'],
      ['mirror', 'pull'],
    ]);
    const [lobby, screen, , guest] = config.streams;
    expect(lobby.producer.kind === 'encoder' && lobby.producer.encoder).to.include({ width: 1280, height: 720, videoBitrateKbps: 2500, videoSource: 'v4l2src device=/dev/video0' });
    expect(screen.producer.kind === 'encoder' && screen.producer.encoder).to.include({ audioSource: null, videoCodec: 'vp9', framerate: 15 });
    expect(screen.limits.maxViewers, 'its own limit').to.equal(50);
    expect(lobby.limits.maxViewers, 'no limit of its own: the relay\'s').to.equal(2000);
    expect(lobby.limits.maxQueueBytes).to.equal(4 << 20);
    expect(guest.publishToken).to.equal('change-me-to-a-long-secret');
  });

  it('an empty encoder is the test pattern; unset keys are the defaults', () => {
    const config = parse(['--config', writeConfig('streams:\n  a:\n    encoder:\n  b:\n    encoder: {}\n    stall-timeout: 2.5\n')]);
    for (const stream of config.streams) expect(stream.producer.kind === 'encoder' && stream.producer.encoder.videoSource).to.match(/^videotestsrc/);
    expect(config.streams[1].limits).to.deep.equal({ ...DEFAULT_LIMITS, maxViewers: 1000, stallTimeoutMs: 2500 });
  });

  const cases: [string, string, RegExp][] = [
    ['unknown top-level key', 'prot: 1\nstreams:\n  a:\n    encoder:\n', /relay\.yml:1: prot: unknown key/],
    ['unknown stream key', 'streams:\n  a:\n    encoder:\n    max-viewer: 3\n', /:4: streams\.a\.max-viewer: unknown key/],
    ['unknown encoder key', 'streams:\n  a:\n    encoder:\n      widht: 640\n', /:4: streams\.a\.encoder\.widht: unknown key \(known here: video-source/],
    ['bad value', 'streams:\n  a:\n    encoder:\n      width: wide\n', /:4: streams\.a\.encoder\.width must be a whole number from 16 to 7680, got "wide"/],
    ['bad top-level value', 'max-queue: lots\nstreams:\n  a:\n    encoder:\n', /:1: max-queue must be a size/],
    ['duplicate stream', 'streams:\n  a:\n    encoder:\n  a:\n    encoder:\n', /:4: streams\.a: a second stream named "a" \(the first is on line 2\)/],
    ['a key set twice', 'streams:\n  a:\n    encoder:\n      width: 320\n      width: 640\n', /:5: streams\.a\.encoder\.width: set twice \(first on line 4\)/],
    ['reserved name', 'streams:\n  metrics:\n    encoder:\n', /:2: streams\.metrics: stream name "metrics" is reserved/],
    ['reserved name js', 'streams:\n  js:\n    encoder:\n', /stream name "js" is reserved/],
    ['name with a dot', 'streams:\n  a.b:\n    encoder:\n', /:2: streams\.a\.b: stream name "a\.b" must be/],
    ['no producer', 'streams:\n  a:\n    max-viewers: 3\n', /:2: streams\.a needs exactly one producer/],
    ['two producers', 'streams:\n  a:\n    listen: tcp://127.0.0.1:9002\n    pull: http://x/a.webm\n', /streams\.a needs exactly one producer.*\(has listen, pull\)/],
    ['listen beyond loopback', 'streams:\n  a:\n    listen: tcp://0.0.0.0:9002\n', /:3: streams\.a\.listen tcp:\/\/0\.0\.0\.0:9002: .*loopback only/],
    ['two streams on one ingest port', 'streams:\n  a:\n    listen: tcp://127.0.0.1:9002\n  b:\n    listen: tcp://127.0.0.1:9002\n', /:5: .*port 9002 is already the ingest of streams\.a/],
    ['short publish token', 'streams:\n  a:\n    publish: { token: short }\n', /:3: streams\.a\.publish\.token must be at least 16 characters/],
    ['pull of something else', 'streams:\n  a:\n    pull: ftp://x/a.webm\n', /streams\.a\.pull must be an http/],
    ['no streams', 'port: 9001\n', /streams must be a map/],
    ['not YAML', 'streams: [\n', /relay\.yml:\d+: /],
  ];
  for (const [what, text, pattern] of cases) {
    it(`refuses: ${what}`, () => fails(['--config', writeConfig(text)], pattern));
  }

  it('refuses a stream option as a flag beside --config, and a file it cannot read', () => {
    const good = writeConfig('streams:\n  a:\n    encoder:\n');
    fails(['--config', good, '--width', '320'], /--width: with --config, set stream options in the file/);
    fails(['--config', path.join(tempDir(), 'missing.yml')], /--config .*missing\.yml: cannot read it \(ENOENT\)/);
  });
});
