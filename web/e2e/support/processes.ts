/** Start and stop the processes the browser test needs: wsbroadcast and `next start`. */

import { type ChildProcess, execFile, spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';

export const WEB_DIR = path.resolve(__dirname, '..', '..');
const WSBROADCAST = process.env.WSBROADCAST_BIN ?? path.resolve(WEB_DIR, '..', '.venv', 'bin', 'wsbroadcast');

export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

async function answers(url: string): Promise<boolean> {
  const response = await fetch(url, { signal: AbortSignal.timeout(2_000) });
  return response.ok;
}

export class Service {
  private constructor(
    private readonly child: ChildProcess,
    readonly name: string,
    private readonly output: string[],
  ) {}

  static spawn(name: string, command: string, args: string[], env: Record<string, string> = {}): Service {
    const output: string[] = [];
    const child = spawn(command, args, {
      cwd: WEB_DIR,
      env: { ...process.env, ...env },
      // Its own process group, so stop() ends whatever it starts too.
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    for (const stream of [child.stdout, child.stderr]) {
      stream?.on('data', (chunk: Buffer) => output.push(chunk.toString()));
    }
    const service = new Service(child, name, output);
    child.on('error', (error) => {
      // e.g. ENOENT: no wsbroadcast in ../.venv (run `make install` at the top first)
      service.failed = true;
      output.push(`cannot start ${command}: ${error.message}\n`);
    });
    return service;
  }

  get log(): string {
    return this.output.join('');
  }

  private failed = false;

  get running(): boolean {
    return !this.failed && this.child.exitCode === null && this.child.signalCode === null;
  }

  async waitReady(url: string, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (!this.running) throw new Error(`${this.name} exited before answering ${url}:\n${this.log}`);
      if (await answers(url).catch(() => false)) return;
      if (Date.now() > deadline) {
        throw new Error(`${this.name} did not answer ${url} within ${timeoutMs} ms:\n${this.log}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  /** SIGTERM, then SIGKILL if it has not exited within `graceMs`; resolves with the exit code. */
  async stop(graceMs = 10_000): Promise<number | null> {
    if (!this.running) return this.child.exitCode;
    const exited = new Promise<number | null>((resolve) => this.child.once('exit', (code) => resolve(code)));
    this.signal('SIGTERM');
    const timer = setTimeout(() => this.signal('SIGKILL'), graceMs);
    const code = await exited;
    clearTimeout(timer);
    return code;
  }

  private signal(name: NodeJS.Signals): void {
    try {
      process.kill(-this.child.pid!, name);
    } catch {
      // already gone
    }
  }
}

export interface ServiceOptions {
  port: number;
  allowedOrigin: string;
  heartbeatSeconds: number;
}

export async function startWsbroadcast({ port, allowedOrigin, heartbeatSeconds }: ServiceOptions): Promise<Service> {
  const service = Service.spawn('wsbroadcast', WSBROADCAST, [
    '--host',
    '127.0.0.1',
    '--port',
    String(port),
    '--allowed-origins',
    allowedOrigin,
    '--heartbeat-seconds',
    String(heartbeatSeconds),
  ]);
  await service.waitReady(`http://127.0.0.1:${port}/healthz`, 20_000);
  return service;
}

export async function startNext(port: number, env: Record<string, string>): Promise<Service> {
  const next = path.join(WEB_DIR, 'node_modules', 'next', 'dist', 'bin', 'next');
  const service = Service.spawn('next start', process.execPath, [next, 'start', '-H', '127.0.0.1', '-p', String(port)], {
    NEXT_TELEMETRY_DISABLED: '1',
    ...env,
  });
  await service.waitReady(`http://127.0.0.1:${port}/`, 30_000);
  return service;
}

const run = promisify(execFile);

/** Publish with curl, as a blog backend would; returns the ids the service assigned. */
export async function publish(baseUrl: string, events: object | object[]): Promise<string[]> {
  const { stdout } = await run(
    'curl',
    ['-sS', '--fail-with-body', '--max-time', '10', '--json', JSON.stringify(events), `${baseUrl}/api/v1/events`],
    { timeout: 15_000 },
  );
  const body = JSON.parse(stdout) as { ids?: unknown };
  if (!Array.isArray(body.ids)) throw new Error(`unexpected answer to POST /events: ${stdout}`);
  return body.ids as string[];
}
