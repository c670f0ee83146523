import net from 'node:net';
import type { Readable } from 'node:stream';
import { logger } from '../log.js';

const log = logger('ingest');

/** Hands a producer's byte stream to its stream; false when another producer is active. */
export type AttachProducer = (stream: Readable, label: string, disconnect: () => void) => boolean;

/**
 * A TCP port producers connect to (the spawned encoder, or an external one). One
 * producer at a time: others are refused with a log line by `attach`.
 */
export class TcpIngest {
  private server: net.Server | null = null;
  private readonly sockets = new Set<net.Socket>();

  constructor(private readonly attach: AttachProducer) {}

  /** Resolves with the bound port. */
  async listen(host: string, port: number, what: string): Promise<number> {
    const server = net.createServer((socket) => {
      const label = `tcp ${socket.remoteAddress}:${socket.remotePort}`;
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
      socket.on('error', () => {}); // reported through 'close'; a reset producer is not a relay error
      if (!this.attach(socket, label, () => socket.destroy())) socket.destroy();
    });
    server.maxConnections = 4; // one producer, plus room to refuse others with a log line
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    const bound = (server.address() as net.AddressInfo).port;
    log.info(`${what}: listening for a producer on tcp://${host}:${bound}`);
    return bound;
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    const server = this.server;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
