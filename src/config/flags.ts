import { parseArgs } from 'node:util';
import { loadConfigFile } from './file.js';
import {
  ConfigError,
  OPTIONS,
  checkToken,
  envName,
  optionSpec,
  parseTcpListen,
  parseUpstreamUrl,
  readEncoder,
  readAccess,
  readLimits,
  readRelaySettings,
  readRecord,
  type Lookup,
  type ProducerConfig,
  type RelayConfig,
} from './options.js';

export function helpText(): string {
  const width = Math.max(...OPTIONS.map((o) => o.name.length + o.value.length)) + 4;
  const lines = OPTIONS.map((o) => {
    const left = `  --${o.name} ${o.value}`.padEnd(width + 4);
    const def = o.default ? ` (default: ${o.default})` : '';
    return `${left}${o.help}${def}\n${' '.repeat(width + 4)}env ${envName(o.name)}`;
  });
  return [
    'Usage: webm-relay [options]',
    '       webm-relay --config FILE [--port N] [--host ADDR] ...',
    '       webm-relay sign NAME --ttl 1h [--config FILE]   (print a signed link to a read: signed stream)',
    '',
    'Encodes live sources once (GStreamer) and relays them to any number of viewers.',
    'Each stream NAME has:',
    '  http://HOST:PORT/NAME/        player page (MediaSource over WebSocket /NAME)',
    '  http://HOST:PORT/NAME.webm    the stream for a <video> tag',
    '  /api/streams/NAME, /NAME/snapshot.jpg, and /NAME/publish (going live from a browser) for a stream with a publish token',
    '  recorded (--record): /NAME/recordings/ (page), /api/recordings/NAME, /recordings/NAME/FILE.webm, /recordings/NAME/range.webm?from=&to=',
    'and the relay: / (the player, or a list when there are several streams), /api/streams,',
    '/api/stats, /metrics, /healthz.',
    '',
    'Without --config the options describe one stream named "live" (/live.webm, WebSocket /live).',
    'With --config the file names the streams and their settings (its keys are the option',
    'names below); of the options, only those of the whole relay (port, host, max-viewers,',
    'ws-max-payload, gst-launch, public-dir) may be given too, and they win over the file.',
    'A stream\'s producer is one of encoder:, listen: tcp://HOST:PORT, pull: URL, or publish:',
    '(publish: { token: SECRET }, or publish: browser with publish-token: SECRET beside it);',
    'see webm-relay.example.yml.',
    '',
    'Options (each also from its environment variable; the command line wins):',
    ...lines,
    '  -h, --help'.padEnd(width + 4) + 'show this help',
  ].join('\n');
}

function parseProducer(text: string): ProducerConfig {
  if (text === 'encoder') return { kind: 'encoder', encoder: undefined! };
  if (text === '-') return { kind: 'stdin' };
  if (text === 'publish') return { kind: 'publish' };
  if (/^https?:\/\//.test(text)) return { kind: 'pull', url: parseUpstreamUrl('--ingest', text) };
  if (text.startsWith('tcp://')) return { kind: 'tcp', ...parseTcpListen('--ingest', text) };
  throw new ConfigError(`--ingest must be encoder, tcp://HOST:PORT, - or http://.../NAME.webm, got "${text}"`);
}

/**
 * Reads the command line and the environment (and the file named by --config).
 * Throws ConfigError with a message for the user.
 */
export function parseConfig(argv: string[], env: NodeJS.ProcessEnv = process.env): RelayConfig | 'help' {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        help: { type: 'boolean', short: 'h' },
        ...Object.fromEntries(OPTIONS.map((o) => [o.name, { type: 'string' as const }])),
      },
      strict: true,
      allowPositionals: false,
    });
  } catch (error) {
    throw new ConfigError(`${(error as Error).message}\nRun webm-relay --help for the options.`);
  }
  if (parsed.values.help) return 'help';
  const given = (name: string): string | undefined => (parsed.values as Record<string, string | undefined>)[name] ?? env[envName(name)];
  const get: Lookup = (name) => ({ text: given(name) ?? optionSpec(name).default, where: `--${name}` });

  const file = given('config');
  if (file) {
    // max-viewers is a stream's limit in the file, and at its top (or as a flag here) the whole relay's.
    const relayWide = (o: (typeof OPTIONS)[number]) => o.scope === 'relay' || o.name === 'max-viewers';
    const stray = OPTIONS.filter((o) => !relayWide(o) && given(o.name) !== undefined).map((o) => `--${o.name}`);
    if (stray.length > 0) {
      throw new ConfigError(`${stray.join(', ')}: with --config, set stream options in the file (under streams.NAME)`);
    }
    const relayOverrides = Object.fromEntries(
      OPTIONS.filter((o) => relayWide(o) && o.name !== 'config' && given(o.name) !== undefined).map((o) => [o.name, given(o.name)!]),
    );
    return loadConfigFile(file, relayOverrides);
  }

  const relay = readRelaySettings(get);
  const limits = readLimits(get);
  const producer = parseProducer(get('ingest').text);
  if (producer.kind === 'encoder') producer.encoder = readEncoder(get);
  const token = given('ingest-token');
  if (producer.kind === 'publish' && !token) throw new ConfigError('--ingest publish needs --ingest-token (the publishers\' token)');
  const access = readAccess(get);
  return {
    ...relay,
    // One stream: its limit is the relay's.
    maxViewers: limits.maxViewers,
    streams: [{ name: 'live', record: readRecord(get, 'live', relay.recordDir ?? ''), producer, publishToken: token ? checkToken('--ingest-token', token) : null, limits, access }],
  };
}
