import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Billing, Tier } from '../../src/index.js';
import type { MockLLM, MockLLMOptions } from '../../src/testing/index.js';
import type { ActivityLog } from './activity.js';
import { buildApp } from './app.js';
import { type ExampleConfig, ExampleConfigError, loadConfig } from './config.js';
import { bootEmbedded, type EmbeddedServices } from './embedded.js';
import { wireRealDodo } from './real.js';
import { openStore } from './store.js';
import { openUpstream } from './upstream.js';
import type { DodoPart, Wiring } from './wiring.js';

export interface StartExampleOptions {
  /** Overrides `PORT` (0: any free port). */
  port?: number;
  /** Overrides `HOST`. */
  host?: string;
  /** The environment to read. @default process.env */
  env?: Readonly<Record<string, string | undefined>>;
  /** Rate tiers. @default GUIDE_TIERS */
  tiers?: readonly Tier[];
  /** Options of the embedded mock LLM (latency, speed, faults). */
  mockLLM?: MockLLMOptions;
}

export interface RunningExample {
  /** `http://localhost:<port>` */
  url: string;
  port: number;
  config: ExampleConfig;
  wiring: Wiring;
  billing: Billing;
  /** The Dodo emulator and the demo customer; only when Dodo is emulated. */
  embedded: EmbeddedServices | undefined;
  /** The mock LLM; only when it is the upstream. */
  mockLLM: MockLLM | undefined;
  /** The customers' recent requests, as the status page shows them (spend per day: `billing.spend`). */
  activity: ActivityLog;
  /** Stops listening, flushes usage to Dodo, and stops the services it started. */
  close(): Promise<void>;
}

/** Listens, or names what is wrong with PORT or HOST and how to fix it. */
function listen(server: Server, port: number, host: string | undefined): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) => reject(listenError(error, port, host)));
    server.listen(port, host, () => {
      server.removeAllListeners('error');
      resolve((server.address() as AddressInfo).port);
    });
  });
}

function listenError(error: NodeJS.ErrnoException, port: number, host: string | undefined): Error {
  const where = host ? `${host}:${port}` : String(port);
  switch (error.code) {
    case 'EADDRINUSE':
      return new ExampleConfigError(
        'PORT',
        `${where} is already in use by another program. Stop it, or start on another port: PORT=${port === 65_535 ? 3001 : port + 1} npm start`,
      );
    case 'EACCES':
      return new ExampleConfigError(
        'PORT',
        `${where} needs privileges this process does not have. Use a port above 1023: PORT=3000 npm start`,
      );
    case 'EADDRNOTAVAIL':
    case 'ENOTFOUND':
      return new ExampleConfigError(
        'HOST',
        `${JSON.stringify(host)} is not an address of this machine. Unset HOST to listen on every interface, or use HOST=127.0.0.1`,
      );
    default:
      return error;
  }
}

/** Closes what was opened, the last first, whatever fails. */
async function closeAll(parts: readonly { close(): Promise<void> }[]): Promise<void> {
  await Promise.allSettled([...parts].reverse().map((part) => part.close()));
}

/**
 * Boots the proxy from the environment. Each part is real when its variables are set and stands
 * in otherwise (see `loadConfig`): no keys at all runs everything in this process.
 */
export async function startExample(options: StartExampleOptions = {}): Promise<RunningExample> {
  const loaded = loadConfig(options.env ?? process.env);
  const config: ExampleConfig = {
    ...loaded,
    port: options.port ?? loaded.port,
    host: options.host ?? loaded.host,
  };
  const opened: { close(): Promise<void> }[] = [];
  let embedded: EmbeddedServices | undefined;
  let wiring: Wiring;
  let mockLLM: MockLLM | undefined;
  try {
    const store = await openStore(config.redisUrl, { forThisRunOnly: config.dodo === undefined });
    opened.push(store);
    const upstream = await openUpstream(config.upstream, options.mockLLM);
    opened.push(upstream);
    mockLLM = upstream.mockLLM;
    let dodo: DodoPart;
    if (config.dodo) dodo = wireRealDodo(config.dodo);
    else ({ part: dodo, services: embedded } = await bootEmbedded());
    opened.push(dodo);
    const { kind: _kind, description: _description, close: _close, ...dodoWiring } = dodo;
    wiring = {
      ...dodoWiring,
      parts: {
        dodo: { kind: dodo.kind, description: dodo.description },
        upstream: { kind: upstream.kind, description: upstream.description },
        store: { kind: store.kind, description: store.description },
      },
      store: store.store,
      openai: upstream.openai,
      publicUrl: config.publicUrl,
      close: () => closeAll(opened),
    };
  } catch (error) {
    await closeAll(opened);
    throw error;
  }
  const { app, billing, activity } = buildApp(wiring, { tiers: options.tiers });
  const server = createServer(app);
  let port: number;
  try {
    port = await listen(server, config.port, config.host);
  } catch (error) {
    await billing.close().catch(() => {});
    await wiring.close();
    throw error;
  }
  const url = `http://localhost:${port}`;
  wiring.listening(`http://127.0.0.1:${port}`);

  let closing: Promise<void> | undefined;
  return {
    url,
    port,
    config,
    wiring,
    billing,
    embedded,
    mockLLM,
    activity,
    close: () => {
      closing ??= (async () => {
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeIdleConnections();
          setTimeout(() => server.closeAllConnections(), 2000).unref();
        });
        try {
          await billing.close();
        } finally {
          await wiring.close();
        }
      })();
      return closing;
    },
  };
}
