import type http from 'node:http';
import type { Socket } from 'node:net';
import { WebSocketServer } from 'ws';
import { STREAM_NAME } from '../config/options.js';
import { logger } from '../log.js';
import { CLIENT_MESSAGE_TYPES, CLOSE_REASONS, type PongMessage } from '../protocol.js';
import type { Stream } from '../stream/stream.js';
import { WebSocketTransport } from './transports.js';

const log = logger('server');

/** WebSocket `/<name>`: the player protocol of each stream (src/protocol.ts). */
export function attachWebSockets(server: http.Server, streams: ReadonlyMap<string, Stream>, maxPayload: number): WebSocketServer {
  // No extensions: WebSocketTransport writes media frames to the socket itself.
  const wss = new WebSocketServer({ noServer: true, maxPayload, perMessageDeflate: false });
  server.on('upgrade', (req, socket: Socket, head) => {
    const name = (req.url ?? '').split('?')[0].slice(1);
    const stream = STREAM_NAME.test(name) ? streams.get(name) : undefined;
    if (!stream) {
      socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.on('error', (error) => log.debug(`websocket: ${error.message}`));
      const viewer = stream.hub.add(new WebSocketTransport(stream.name, ws, socket));
      if (!viewer) {
        ws.close(CLOSE_REASONS.full.ws, CLOSE_REASONS.full.text);
        return;
      }
      ws.on('message', (data, isBinary) => {
        const text = isBinary ? '' : data.toString();
        let type: unknown;
        try {
          type = (JSON.parse(text) as { type?: unknown }).type;
        } catch {
          type = undefined;
        }
        if (typeof type === 'string' && CLIENT_MESSAGE_TYPES.has(type)) {
          const pong: PongMessage = { type: 'pong', viewers: stream.hub.watching };
          ws.send(JSON.stringify(pong));
        } else {
          log.debug('websocket: ignored an unexpected message');
        }
      });
      ws.once('close', () => stream.hub.remove(viewer));
    });
  });
  return wss;
}
