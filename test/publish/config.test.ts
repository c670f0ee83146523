/** The access and embedding settings, parsed in-process: defaults, inheritance from the top, and mistakes with file, line and key. */
import { expect } from 'chai';
import { parseConfig } from '../../src/config/flags.js';
import { ConfigError, type RelayConfig } from '../../src/config/options.js';
import { parseDuration, signLinks } from '../../src/sign.js';
import { checkRead, linkSignature } from '../../src/server/auth.js';
import { writeConfig } from '../helpers/streams.js';

const parse = (argv: string[]) => parseConfig(argv, {}) as RelayConfig;
const fails = (argv: string[], pattern: RegExp) => expect(() => parseConfig(argv, {})).to.throw(ConfigError, pattern);

describe('publish: access settings', () => {
  it('defaults to open, no origins list; a stream takes the top-level sign-key and allow-origins', () => {
    expect(parse([]).streams[0].access).to.deep.equal({ read: 'open', readToken: null, signKey: null, allowOrigins: null });
    const config = parse([
      '--config',
      writeConfig('sign-key: top-level-key-0123456789\nallow-origins: https://a.example http://b.example:8080\nstreams:\n  one:\n    encoder:\n    read: signed\n  two:\n    encoder:\n    allow-origins: "*"\n'),
    ]);
    expect(config.streams[0].access).to.deep.equal({ read: 'signed', readToken: null, signKey: 'top-level-key-0123456789', allowOrigins: ['https://a.example', 'http://b.example:8080'] });
    expect(config.streams[1].access.allowOrigins).to.deep.equal(['*']);
    const flags = parse(['--read', 'token', '--read-token', 'viewer-token-0123456789', '--ingest', 'publish', '--ingest-token', 'publisher-token-0123456789']);
    expect(flags.streams[0]).to.deep.include({ producer: { kind: 'publish' }, publishToken: 'publisher-token-0123456789' });
    expect(flags.streams[0].access.read).to.equal('token');
  });

  it('names the file, line and key of a mistake', () => {
    fails(['--config', writeConfig('streams:\n  one:\n    encoder:\n    read: token\n')], /relay\.yml:4: streams\.one\.read: read: token needs a read-token/);
    fails(['--config', writeConfig('streams:\n  one:\n    encoder:\n    read: signed\n')], /relay\.yml:4: streams\.one\.read: read: signed needs a sign-key/);
    fails(['--config', writeConfig('streams:\n  one:\n    encoder:\n    read: members\n')], /relay\.yml:4: streams\.one\.read must be one of open, token, signed/);
    fails(['--config', writeConfig('streams:\n  one:\n    encoder:\n    read: token\n    read-token: short\n')], /relay\.yml:5: streams\.one\.read-token must be at least 16 characters/);
    fails(['--config', writeConfig('streams:\n  one:\n    encoder:\n    allow-origins: https://a.example/page\n')], /relay\.yml:4: streams\.one\.allow-origins: "https:\/\/a\.example\/page" is not an origin/);
    fails(['--ingest', 'publish'], /--ingest publish needs --ingest-token/);
  });

  it('publish: browser takes its token from publish-token beside it, and means the same slot as publish: { token }', () => {
    const config = parse(['--config', writeConfig('streams:\n  room:\n    publish: browser\n    publish-token: room-publish-token-0123\n  guest:\n    publish: { token: guest-publish-token-0123 }\n')]);
    expect(config.streams.map((s) => [s.name, s.producer, s.publishToken])).to.deep.equal([
      ['room', { kind: 'publish' }, 'room-publish-token-0123'],
      ['guest', { kind: 'publish' }, 'guest-publish-token-0123'],
    ]);
  });

  const publishMistakes: [string, string, RegExp][] = [
    ['publish: browser without a token', 'streams:\n  room:\n    publish: browser\n', /relay\.yml:3: streams\.room\.publish: browser needs the publishers' token: add publish-token: SECRET .* never open without one/],
    ['a short publish-token', 'streams:\n  room:\n    publish: browser\n    publish-token: short\n', /relay\.yml:4: streams\.room\.publish-token must be at least 16 characters/],
    ['an empty publish-token', 'streams:\n  room:\n    publish: browser\n    publish-token:\n', /relay\.yml:4: streams\.room\.publish-token must have a value/],
    ['another word than browser', 'streams:\n  room:\n    publish: camera\n', /relay\.yml:3: streams\.room\.publish must be browser \(with publish-token: SECRET beside it\) or \{ token: SECRET \}, got "camera"/],
    ['an empty publish', 'streams:\n  room:\n    publish:\n    publish-token: room-publish-token-0123\n', /relay\.yml:3: streams\.room\.publish must be browser/],
    ['two tokens', 'streams:\n  room:\n    publish: { token: room-publish-token-0123 }\n    publish-token: room-publish-token-4567\n', /relay\.yml:4: streams\.room\.publish-token: a second token for this stream/],
    ['a publish-token on an encoder stream', 'streams:\n  cam:\n    encoder:\n    publish-token: room-publish-token-0123\n', /relay\.yml:4: streams\.cam\.publish-token: only a publish stream .* producer is encoder/],
    ['a publish-token at the top', 'publish-token: room-publish-token-0123\nstreams:\n  room:\n    publish: browser\n', /relay\.yml:1: publish-token: unknown key/],
  ];
  for (const [what, text, pattern] of publishMistakes) {
    it(`refuses ${what}`, () => fails(['--config', writeConfig(text)], pattern));
  }

  it('signatures: over the stream name and expiry; sign prints working links; durations', () => {
    const key = 'signing-key-0123456789abcdef';
    const now = 1_800_000_000_000;
    const [player, webm] = signLinks(['club', '--ttl', '2h', '--sign-key', key, '--base', 'https://relay.example/'], {}, now);
    const query = new URL(player).searchParams;
    expect(player.startsWith('https://relay.example/club/?exp=1800007200&sig=')).to.equal(true);
    expect(new URL(webm).search).to.equal(new URL(player).search);
    expect(query.get('sig')).to.equal(linkSignature('club', 1_800_007_200, key));
    const access = { read: 'signed' as const, readToken: null, signKey: key, allowOrigins: null };
    expect(checkRead('club', access, query, undefined, now)).to.deep.equal({ ok: true, via: 'signature' });
    expect(checkRead('club', access, query, undefined, now + 7200_000)).to.deep.equal({ ok: false, why: 'expired' });
    expect(checkRead('other', access, query, undefined, now)).to.deep.equal({ ok: false, why: 'wrong' });
    expect([parseDuration('90'), parseDuration('30m'), parseDuration('1h'), parseDuration('7d')]).to.deep.equal([90, 1800, 3600, 604800]);
    expect(() => parseDuration('0')).to.throw(ConfigError);
    expect(() => signLinks(['club'], {})).to.throw(ConfigError, /no key/);
  });
});
