import net from 'node:net';
import type { Readable } from 'node:stream';
import type { Hub } from '../hub/hub.js';
import { logger } from '../log.js';
import type { Normalizer } from '../normalizer/normalizer.js';
import type { SplitterLimits } from '../webm/splitter.js';
import { ProducerSession } from './pipeline.js';

const log = logger('ingest');

export interface IngestStats {
  state: 'waiting' | 'receiving';
  producer: string | null;
  producers: number;
  refused: number;
  rejected: number;
  bytesIn: number;
}

/**
 * Where producers connect. Exactly one producer feeds the stream at a time; a second
 * one is refused while the first is connected.
 */
export class Ingest {
  private session: ProducerSession | null = null;
  private servers: net.Server[] = [];
  private sockets = new Set<net.Socket>();
  private readonly counts = { producers: 0, refused: 0, rejected: 0, bytesIn: 0 };
  /** Called when the current producer's stream header arrives. */
  onStream: (label: string) => void = () => {};

  constructor(
    private readonly normalizer: Normalizer,
    private readonly hub: Hub,
    private readonly limits: Partial<SplitterLimits>,
  ) {}

  stats(): IngestStats {
    return {
      state: this.session ? 'receiving' : 'waiting',
      producer: this.session?.label ?? null,
      ...this.counts,
      bytesIn: this.counts.bytesIn + (this.session?.bytesIn ?? 0),
    };
  }

  /**
   * Takes a producer's byte stream unless another is active. `disconnect` is called
   * when its data is rejected. Returns false when refused.
   */
  attach(stream: Readable, label: string, disconnect: () => void): boolean {
    if (this.session) {
      this.counts.refused++;
      log.warn(`${label}: refused: ${this.session.label} is already producing`);
      return false;
    }
    const session = new ProducerSession(
      label,
      this.normalizer,
      this.hub,
      this.limits,
      () => {
        this.counts.rejected++;
        disconnect();
      },
      () => this.onStream(label),
    );
    this.session = session;
    this.counts.producers++;
    log.info(`${label}: producer connected`);
    stream.on('data', (chunk: Buffer) => session.write(chunk));
    let finished = false;
    const finish = (why: string) => {
      if (finished) return;
      finished = true;
      session.end();
      this.counts.bytesIn += session.bytesIn;
      if (this.session === session) this.session = null;
      log.info(`${label}: producer ${why} after ${session.bytesIn} bytes`);
    };
    stream.once('end', () => finish('ended'));
    stream.once('close', () => finish('disconnected'));
    stream.once('error', (error) => finish(`failed (${error.message})`));
    return true;
  }

  /** Listens for producers on a TCP port. Resolves with the bound port. */
  async listenTcp(host: string, port: number): Promise<number> {
    const server = net.createServer((socket) => {
      const label = `tcp ${socket.remoteAddress}:${socket.remotePort}`;
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
      socket.on('error', () => {}); // reported through 'close'; a reset producer is not a relay error
      if (!this.attach(socket, label, () => socket.destroy())) socket.destroy();
    });
    server.maxConnections = 4; // one producer, plus room to refuse others with a log line
    this.servers.push(server);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    const bound = (server.address() as net.AddressInfo).port;
    log.info(`listening for a producer on tcp://${host}:${bound}`);
    return bound;
  }

  /** Reads the stream from standard input. */
  readStdin(onEnd: () => void): void {
    process.stdin.once('end', onEnd);
    this.attach(process.stdin, 'stdin', () => process.stdin.destroy());
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await Promise.all(this.servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }
}
