/**
 * A real `ws` server on a free port standing in for wsbroadcast in hook tests: it records each
 * handshake (URL, offered subprotocols) and lets a test script what the server does next.
 */

import type { IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';

import { type WebSocket as ServerSocket, WebSocketServer } from 'ws';

import { until } from './wait';

export interface ServerConnection {
  socket: ServerSocket;
  /** Path and query of the handshake, e.g. `/api/v1/ws?since=e-3`. */
  url: URL;
  /** The `Sec-WebSocket-Protocol` header as sent, or undefined. */
  protocols: string | undefined;
  /** Set when the connection ends: the close code the server saw. */
  closedWith: number | null;
  send(message: object | string): void;
}

export class TestServer {
  readonly connections: ServerConnection[] = [];
  /** The most connections that were ever open at once. */
  maxOpen = 0;
  private openCount = 0;

  private constructor(
    private readonly wss: WebSocketServer,
    readonly url: string,
  ) {}

  /** `onConnection` scripts the server (close with a code, send, stay silent); the default stays silent. */
  static async start(onConnection: (connection: ServerConnection) => void = () => {}): Promise<TestServer> {
    const wss = new WebSocketServer({
      host: '127.0.0.1',
      port: 0,
      // Like wsbroadcast: answer `wsbroadcast` whenever it is offered.
      handleProtocols: (offered) => (offered.has('wsbroadcast') ? 'wsbroadcast' : false),
    });
    await new Promise<void>((resolve) => wss.once('listening', resolve));
    const { port } = wss.address() as AddressInfo;
    const server = new TestServer(wss, `ws://127.0.0.1:${port}/api/v1/ws`);
    wss.on('connection', (socket: ServerSocket, request: IncomingMessage) => {
      const connection: ServerConnection = {
        socket,
        url: new URL(request.url ?? '/', `http://127.0.0.1:${port}`),
        protocols: request.headers['sec-websocket-protocol'],
        closedWith: null,
        send: (message) => socket.send(typeof message === 'string' ? message : JSON.stringify(message)),
      };
      server.openCount += 1;
      server.maxOpen = Math.max(server.maxOpen, server.openCount);
      socket.on('close', (code: number) => {
        server.openCount -= 1;
        connection.closedWith = code;
      });
      server.connections.push(connection);
      onConnection(connection);
    });
    return server;
  }

  get openConnections(): number {
    return this.openCount;
  }

  /** The n-th connection (from 1), once it has arrived. */
  async connection(n: number): Promise<ServerConnection> {
    await until(() => this.connections.length >= n, `connection #${n} to arrive`);
    return this.connections[n - 1]!;
  }

  async stop(): Promise<void> {
    for (const client of this.wss.clients) client.terminate();
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
  }
}

let nextId = 1;

/** An event frame as wsbroadcast sends it. */
export function eventFrame(type = 'blog_update', data: object = { post_id: 'p1', action: 'created' }) {
  return { id: `0-${nextId++}`, type, data, timestamp: new Date().toISOString() };
}
