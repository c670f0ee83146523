import type http from 'node:http';
import type { Socket } from 'node:net';
import { WebSocketServer } from 'ws';
import { STREAM_NAME } from '../config/options.js';
import { logger } from '../log.js';
import { CLIENT_MESSAGE_TYPES, CLOSE_REASONS, type PongMessage } from '../protocol.js';
import type { Stream } from '../stream/stream.js';
import { webSocketOriginAllowed, type AccessGate } from './access.js';
import { PublishSockets } from './publish-socket.js';
import { WebSocketTransport } from './transports.js';

const log = logger('server');

const NAME = STREAM_NAME.source.slice(1, -1);
const VIEWER_PATH = new RegExp(`^/(${NAME})$`);
const PUBLISH_PATH = new RegExp(`^/(${NAME})/publish$`);

const refuseHandshake = (socket: Socket, status: string) =>
  socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nCache-Control: no-store\r\nContent-Length: 0\r\n\r\n`);

/** WebSocket `/<name>`: the player protocol of each stream (src/protocol.ts); `/<name>/publish`: its publisher. */
export function attachWebSockets(
  server: http.Server,
  streams: ReadonlyMap<string, Stream>,
  maxPayload: number,
  gate: AccessGate,
): { wss: WebSocketServer; publishers: PublishSockets } {
  // No extensions: WebSocketTransport writes media frames to the socket itself.
  const wss = new WebSocketServer({ noServer: true, maxPayload, perMessageDeflate: false });
  const publishers = new PublishSockets(gate);
  server.on('upgrade', (req: http.IncomingMessage, socket: Socket, head: Buffer) => {
    const path = (req.url ?? '').split('?')[0];
    const publish = PUBLISH_PATH.exec(path);
    const match = publish ?? VIEWER_PATH.exec(path);
    const stream = match ? streams.get(match[1]) : undefined;
    if (!stream) return refuseHandshake(socket, '404 Not Found');
    if (publish) return publishers.upgrade(stream, req, socket, head);
    if (!webSocketOriginAllowed(stream.config.access, req)) {
      stream.accessFailures.read++;
      log.warn(`${stream.name}: websocket from ${req.socket.remoteAddress}: refused, origin ${req.headers.origin} is not in allow-origins`);
      return refuseHandshake(socket, '403 Forbidden');
    }
    wss.handleUpgrade(req, socket, head, async (ws) => {
      ws.on('error', (error) => log.debug(`websocket: ${error.message}`));
      const verdict = await gate.viewer(stream, req, 'websocket');
      if (!verdict.ok) {
        const reason = CLOSE_REASONS[verdict.refusal];
        ws.close(reason.ws, reason.text);
        return;
      }
      if (ws.readyState !== ws.OPEN) return;
      const viewer = stream.hub.add(new WebSocketTransport(stream.name, ws, socket, () => stream.hub.pacing.current));
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
          const pong: PongMessage = { type: 'pong', viewers: stream.hub.watching, pacing: stream.hub.pacing.current };
          ws.send(JSON.stringify(pong));
        } else {
          log.debug('websocket: ignored an unexpected message');
        }
      });
      ws.once('close', () => stream.hub.remove(viewer));
    });
  });
  return { wss, publishers };
}
