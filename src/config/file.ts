import fs from 'node:fs';
import { LineCounter, isMap, isScalar, parseDocument, type Node, type YAMLMap } from 'yaml';
import {
  ConfigError,
  OPTIONS,
  checkStreamName,
  checkToken,
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
  type StreamConfig,
} from './options.js';

const PRODUCER_KEYS = ['encoder', 'listen', 'publish', 'pull'] as const;
const fileKeys = (scope: 'relay' | 'stream' | 'encoder') => OPTIONS.filter((o) => o.scope === scope && !o.flagOnly).map((o) => o.name);
/** At the top: the relay's settings, and defaults for every stream's limits. */
const TOP_KEYS = new Set([...fileKeys('relay'), ...fileKeys('stream'), 'streams']);
/** `publish-token`: the token of a `publish: browser` stream (a scalar producer has no room for it). */
const STREAM_KEYS = new Set([...fileKeys('stream'), ...PRODUCER_KEYS, 'publish-token']);
const ENCODER_KEYS = new Set(fileKeys('encoder'));

/**
 * Reads a YAML config file: the relay's settings and its `streams:` map. Every
 * mistake is a ConfigError naming the file, the line and the key path.
 * `overrides` are relay settings from the command line, which win.
 */
export function loadConfigFile(file: string, overrides: Record<string, string> = {}): RelayConfig {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    throw new ConfigError(`--config ${file}: cannot read it (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
  const lines = new LineCounter();
  // Duplicate keys are found below, where the key's own line and path can be named.
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: false });
  if (doc.errors.length > 0) {
    const error = doc.errors[0];
    const line = error.linePos?.[0].line ?? lines.linePos(error.pos[0]).line;
    throw new ConfigError(`${file}:${line}: ${error.message.split('\n')[0]}`);
  }
  const at = (node: Node | null | undefined, path: string) => `${file}:${node?.range ? lines.linePos(node.range[0]).line : 1}: ${path}`;
  const root = doc.contents;
  if (!isMap(root)) throw new ConfigError(`${at(root, 'the file')} must be a map of settings with a "streams:" map`);

  /** The keys of a map with their value nodes, unknown keys refused. */
  const entries = (map: YAMLMap, path: string, known: ReadonlySet<string>): Map<string, { node: Node | null; keyNode: Node }> => {
    const out = new Map<string, { node: Node | null; keyNode: Node }>();
    for (const pair of map.items) {
      const keyNode = pair.key as Node;
      const key = isScalar(keyNode) ? String(keyNode.value) : '?';
      const keyPath = path ? `${path}.${key}` : key;
      if (!known.has(key)) {
        throw new ConfigError(`${at(keyNode, keyPath)}: unknown key (known here: ${[...known].join(', ')})`);
      }
      if (out.has(key)) throw new ConfigError(`${at(keyNode, keyPath)}: set twice (first on line ${lines.linePos(out.get(key)!.keyNode.range![0]).line})`);
      out.set(key, { node: pair.value as Node | null, keyNode });
    }
    return out;
  };
  const scalarText = (node: Node | null, keyNode: Node, path: string): string => {
    if (node === null || !isScalar(node) || node.value === null) throw new ConfigError(`${at(node ?? keyNode, path)} must have a value`);
    return String(node.value);
  };
  /** A Lookup over a map's scalars, falling back to `parent` for what it does not set. */
  const lookup = (values: Map<string, { node: Node | null; keyNode: Node }>, path: string, parent: Lookup): Lookup => (name) => {
    const entry = values.get(name);
    if (!entry) return parent(name);
    const keyPath = path ? `${path}.${name}` : name;
    return { text: scalarText(entry.node, entry.keyNode, keyPath), where: at(entry.node ?? entry.keyNode, keyPath) };
  };

  /**
   * A publish slot: `publish: { token: SECRET }`, or `publish: browser` with the token in
   * the stream's `publish-token:`. Either way a token is required: a publish stream open to
   * anyone would let anyone who finds the relay put pictures in front of its viewers, and
   * "only from loopback" would be no safer, since behind a proxy on the same host every
   * request comes from loopback.
   */
  const readPublish = (
    values: Map<string, { node: Node | null; keyNode: Node }>,
    node: Node | null,
    producerKey: Node,
    producerPath: string,
    path: string,
  ): { producer: ProducerConfig; publishToken: string } => {
    const tokenEntry = values.get('publish-token');
    const checkedToken = (entry: { node: Node | null; keyNode: Node }, keyPath: string) =>
      checkToken(at(entry.node ?? entry.keyNode, keyPath), scalarText(entry.node, entry.keyNode, keyPath));
    if (isMap(node)) {
      const publish = entries(node, producerPath, new Set(['token']));
      const token = publish.get('token');
      if (!token) throw new ConfigError(`${at(node, producerPath)} needs a token (at least 16 characters)`);
      if (tokenEntry) {
        throw new ConfigError(`${at(tokenEntry.keyNode, `${path}.publish-token`)}: a second token for this stream (it has ${producerPath}.token); keep one`);
      }
      return { producer: { kind: 'publish' }, publishToken: checkedToken(token, `${producerPath}.token`) };
    }
    const text = node !== null && isScalar(node) && node.value !== null ? String(node.value) : '';
    if (text !== 'browser') {
      throw new ConfigError(
        `${at(node ?? producerKey, producerPath)} must be browser (with publish-token: SECRET beside it) or { token: SECRET }` + (text ? `, got "${text}"` : ''),
      );
    }
    if (!tokenEntry) {
      throw new ConfigError(
        `${at(node, producerPath)}: browser needs the publishers' token: add publish-token: SECRET (at least 16 characters) under ${path}, ` +
          'or write publish: { token: SECRET }. A publish stream is never open without one',
      );
    }
    return { producer: { kind: 'publish' }, publishToken: checkedToken(tokenEntry, `${path}.publish-token`) };
  };

  const top = entries(root, '', TOP_KEYS);
  const defaults: Lookup = (name) => ({ text: overrides[name] ?? optionSpec(name).default, where: overrides[name] !== undefined ? `--${name}` : `default of ${name}` });
  const topLookup = lookup(top, '', defaults);
  const relay = readRelaySettings((name) => (overrides[name] !== undefined ? defaults(name) : topLookup(name)));

  // A stream's max-viewers defaults to the relay's total, not to the top-level key's meaning.
  const streamDefaults: Lookup = (name) => (name === 'max-viewers' ? { text: String(relay.maxViewers), where: 'max-viewers' } : topLookup(name));

  const streamsEntry = top.get('streams');
  if (!streamsEntry || !isMap(streamsEntry.node)) {
    throw new ConfigError(`${at(streamsEntry?.node ?? streamsEntry?.keyNode ?? root, 'streams')} must be a map of stream names to their settings`);
  }
  const streams: StreamConfig[] = [];
  const listenPorts = new Map<number, string>();
  const names = new Map<string, Node>();
  for (const pair of streamsEntry.node.items) {
    const keyNode = pair.key as Node;
    const name = isScalar(keyNode) ? String(keyNode.value) : '';
    const path = `streams.${name}`;
    checkStreamName(at(keyNode, path), name);
    const first = names.get(name);
    if (first) throw new ConfigError(`${at(keyNode, path)}: a second stream named "${name}" (the first is on line ${lines.linePos(first.range![0]).line})`);
    names.set(name, keyNode);
    const body = pair.value as Node | null;
    if (!isMap(body)) throw new ConfigError(`${at(body ?? keyNode, path)} must be a map with one producer (${PRODUCER_KEYS.join(', ')})`);
    const values = entries(body, path, STREAM_KEYS);
    const producers = PRODUCER_KEYS.filter((k) => values.has(k));
    if (producers.length !== 1) {
      throw new ConfigError(
        `${at(keyNode, path)} needs exactly one producer, one of ${PRODUCER_KEYS.join(', ')}` + (producers.length ? ` (has ${producers.join(', ')})` : ''),
      );
    }
    const kind = producers[0];
    const { node, keyNode: producerKey } = values.get(kind)!;
    const producerPath = `${path}.${kind}`;
    let producer: ProducerConfig;
    let publishToken: string | null = null;
    switch (kind) {
      case 'encoder': {
        // `encoder:` alone (or `{}`) is the default test pattern.
        const settings = node === null || (isScalar(node) && node.value === null) ? new Map() : isMap(node) ? entries(node, producerPath, ENCODER_KEYS) : null;
        if (!settings) throw new ConfigError(`${at(node, producerPath)} must be a map of encoder settings (or empty for the test pattern)`);
        producer = { kind: 'encoder', encoder: readEncoder(lookup(settings, producerPath, (n) => ({ text: optionSpec(n).default, where: `default of ${n}` }))) };
        break;
      }
      case 'listen': {
        const where = at(node ?? producerKey, producerPath);
        const listen = parseTcpListen(where, scalarText(node, producerKey, producerPath));
        const other = listenPorts.get(listen.port);
        if (other) throw new ConfigError(`${where}: port ${listen.port} is already the ingest of ${other}`);
        listenPorts.set(listen.port, path);
        producer = { kind: 'tcp', ...listen };
        break;
      }
      case 'pull':
        producer = { kind: 'pull', url: parseUpstreamUrl(at(node ?? producerKey, producerPath), scalarText(node, producerKey, producerPath)) };
        break;
      case 'publish': {
        ({ producer, publishToken } = readPublish(values, node, producerKey, producerPath, path));
        break;
      }
    }
    if (kind !== 'publish' && values.has('publish-token')) {
      const entry = values.get('publish-token')!;
      throw new ConfigError(`${at(entry.keyNode, `${path}.publish-token`)}: only a publish stream (publish: browser) has a publish token; this one's producer is ${kind}`);
    }
    const streamLookup = lookup(values, path, streamDefaults);
    streams.push({ name, record: readRecord(streamLookup, name, relay.recordDir ?? ''), producer, publishToken, limits: readLimits(streamLookup), access: readAccess(streamLookup) });
  }
  if (streams.length === 0) throw new ConfigError(`${at(streamsEntry.node, 'streams')} names no stream`);
  return { ...relay, streams };
}
