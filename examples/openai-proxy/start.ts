import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Billing, Tier } from '../../src/index.js';
import type { MockLLMOptions } from '../../src/testing/index.js';
import { buildApp } from './app.js';
import { type ExampleConfig, loadConfig } from './config.js';
import { bootEmbedded, type EmbeddedServices } from './embedded.js';
import { wireReal } from './real.js';
import type { Wiring } from './wiring.js';

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
  /** The emulator, the mock LLM and the demo customer; only in embedded mode. */
  embedded: EmbeddedServices | undefined;
  /** Stops listening, flushes usage to Dodo, and stops the services it started. */
  close(): Promise<void>;
}

function listen(server: Server, port: number, host: string | undefined): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/** Boots the proxy from the environment: embedded (no keys) or against the real services. */
export async function startExample(options: StartExampleOptions = {}): Promise<RunningExample> {
  const loaded = loadConfig(options.env ?? process.env);
  const config: ExampleConfig = {
    ...loaded,
    port: options.port ?? loaded.port,
    host: options.host ?? loaded.host,
  };
  let embedded: EmbeddedServices | undefined;
  let wiring: Wiring;
  if (config.mode === 'embedded') {
    ({ wiring, services: embedded } = await bootEmbedded(config, { mockLLM: options.mockLLM }));
  } else {
    wiring = await wireReal(config);
  }
  const { app, billing } = buildApp(wiring, { tiers: options.tiers });
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
