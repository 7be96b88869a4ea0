/**
 * A TCP proxy between the browser and wsbroadcast, so a test can break the link while the
 * service stays up: cut it (the browser sees the socket die), hold new connections, or
 * freeze it (the socket stays open but nothing gets through: a dead link).
 */

import net from 'node:net';
import type { AddressInfo } from 'node:net';

interface Pair {
  client: net.Socket;
  upstream: net.Socket | null;
}

export class LinkProxy {
  private readonly pairs = new Set<Pair>();
  private held: Pair[] = [];
  private holding = false;

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
    private readonly upstreamPort: number,
  ) {}

  static async start(upstreamPort: number): Promise<LinkProxy> {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const proxy = new LinkProxy(server, (server.address() as AddressInfo).port, upstreamPort);
    server.on('connection', (client) => proxy.accept(client));
    return proxy;
  }

  /** Connections currently forwarded. */
  get live(): number {
    return [...this.pairs].filter((pair) => pair.upstream !== null).length;
  }

  /** Destroy every open connection; with `hold`, park new ones until `release()`. */
  cut({ hold }: { hold: boolean }): void {
    this.holding = hold;
    for (const pair of this.pairs) this.drop(pair);
  }

  /** Forward the parked connections and every new one again. */
  release(): void {
    this.holding = false;
    const parked = this.held;
    this.held = [];
    for (const pair of parked) this.connect(pair);
  }

  /** Stop forwarding on the open connections without closing them; new ones pass. */
  freeze(): void {
    for (const pair of this.pairs) {
      pair.client.unpipe();
      pair.upstream?.unpipe();
      pair.client.pause();
      pair.upstream?.pause();
    }
  }

  async stop(): Promise<void> {
    for (const pair of this.pairs) this.drop(pair);
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: net.Socket): void {
    const pair: Pair = { client, upstream: null };
    this.pairs.add(pair);
    client.on('error', () => this.drop(pair));
    client.on('close', () => this.drop(pair));
    if (this.holding) {
      client.pause();
      this.held.push(pair);
    } else {
      this.connect(pair);
    }
  }

  private connect(pair: Pair): void {
    if (pair.client.destroyed) return;
    const upstream = net.connect(this.upstreamPort, '127.0.0.1');
    pair.upstream = upstream;
    upstream.on('error', () => this.drop(pair));
    upstream.on('close', () => this.drop(pair));
    pair.client.pipe(upstream);
    upstream.pipe(pair.client);
    pair.client.resume();
  }

  private drop(pair: Pair): void {
    this.pairs.delete(pair);
    pair.client.destroy();
    pair.upstream?.destroy();
  }
}
