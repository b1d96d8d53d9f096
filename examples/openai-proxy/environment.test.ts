import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type Server } from 'node:net';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { costOfTokens, formatUsd, parseUsd, RedisStore, resolvePricing } from '../../src/index.js';
import { createMockLLM, type MockLLM, mockCompletion } from '../../src/testing/index.js';
import { deleteKeysWithPrefix, requireRedis } from '../../test/support/redis.js';
import { partLines } from './banner.js';
import { PRICING } from './billing-config.js';
import { ExampleConfigError } from './config.js';
import { type RunningExample, startExample } from './start.js';

/*
 * `npm start` in an environment that already has keys: what is there is used, the rest stands in,
 * and the startup banner says which is which. Real Dodo only with Dodo's own variables.
 */

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const TSX = fileURLToPath(new URL('../../node_modules/.bin/tsx', import.meta.url));
const UPSTREAM_KEY = 'sk-upstream-of-the-proxy';
const hello = [{ role: 'user' as const, content: 'Hello there' }];

/** A port something else listens on. */
async function busyPort(): Promise<{ port: number; server: Server }> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  return { port: typeof address === 'object' && address ? address.port : 0, server };
}

/** `npm start` (tsx on server.ts) with exactly `env` (no keys of this machine leak in). */
function npmStart(
  env: Record<string, string>,
): ChildProcess & { output: { stdout: string; stderr: string } } {
  const child = spawn(TSX, ['examples/openai-proxy/server.ts'], {
    cwd: REPO,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output = { stdout: '', stderr: '' };
  child.stdout.on('data', (chunk: Buffer) => {
    output.stdout += chunk.toString();
  });
  child.stderr.on('data', (chunk: Buffer) => {
    output.stderr += chunk.toString();
  });
  return Object.assign(child, { output });
}

async function balanceOf(example: RunningExample, apiKey: string): Promise<string> {
  const response = await fetch(`${example.url}/billing/balance`, {
    headers: { authorization: `Bearer ${apiKey}` },
  });
  return ((await response.json()) as { balance: string }).balance;
}

describe('a real upstream from OPENAI_API_KEY, with the emulated Dodo', () => {
  let upstream: MockLLM;
  let example: RunningExample;

  beforeAll(async () => {
    // A real OpenAI-compatible server, as far as the proxy knows: it takes one key only.
    upstream = await createMockLLM({ apiKey: UPSTREAM_KEY });
    example = await startExample({
      port: 0,
      env: { OPENAI_API_KEY: UPSTREAM_KEY, OPENAI_BASE_URL: upstream.baseURL },
    });
  });
  afterAll(async () => {
    await example?.close();
    await upstream?.close();
  });

  it('starts, says the upstream is real and Dodo emulated, and bills a call made upstream exactly', async () => {
    expect(example.mockLLM).toBeUndefined();
    expect(example.embedded).toBeDefined();
    const lines = partLines(example);
    expect(lines).toEqual([
      expect.stringMatching(
        /^ {2}Dodo Payments {2}emulated {2}the Dodo Payments emulator .*set DODO_PAYMENTS_API_KEY/,
      ),
      `  Upstream LLM   REAL      ${upstream.baseURL} (OPENAI_API_KEY and OPENAI_BASE_URL)`,
      expect.stringMatching(/^ {2}Store {10}memory {4}in this process \(set REDIS_URL for Redis\)$/),
    ]);

    const buyer = example.embedded!.addCustomer({ dollars: '5.00' });
    const openai = new OpenAI({ apiKey: buyer.apiKey, baseURL: `${example.url}/v1`, maxRetries: 0 });
    const completion = await openai.chat.completions.create({ model: 'gpt-4o', messages: hello });
    // Answered by the upstream, which refuses any key but its own: the proxy forwarded with it.
    expect(upstream.requests()).toHaveLength(1);
    expect(completion.choices[0]!.message.content).toBe(
      mockCompletion('chat', { model: 'gpt-4o', messages: hello }).text,
    );
    const { prompt_tokens, completion_tokens } = completion.usage!;
    const cost = costOfTokens(resolvePricing(PRICING).get('gpt-4o')!, prompt_tokens, completion_tokens).total;
    expect(cost).toBeGreaterThan(0n);
    expect(await balanceOf(example, buyer.apiKey)).toBe(formatUsd(parseUsd('5', 'x') - cost));
  });
});

const redisUrl = await requireRedis('example on REDIS_URL');

describe.skipIf(!redisUrl)('Redis from REDIS_URL, with the emulated Dodo', () => {
  it('bills on a RedisStore under keys of its own run, and removes them when it stops', async () => {
    const example = await startExample({ port: 0, env: { REDIS_URL: redisUrl! } });
    const redis = new Redis(redisUrl!);
    let prefix = '';
    try {
      expect(example.wiring.store).toBeInstanceOf(RedisStore);
      const [, , store] = partLines(example);
      expect(store).toMatch(
        /^ {2}Store {10}Redis {5}redis:\/\/.* \(REDIS_URL\), this run's keys under elb-demo:/,
      );
      prefix = /(elb-demo:[0-9a-f-]+:)\*/.exec(store!)![1]!;

      const { demo } = example.embedded!;
      const openai = new OpenAI({ apiKey: demo.apiKey, baseURL: `${example.url}/v1`, maxRetries: 0 });
      await openai.chat.completions.create({ model: 'gpt-4o', messages: hello });
      // 2 × $2.50/1M + 4 × $10.00/1M, settled in Redis.
      expect(await balanceOf(example, demo.apiKey)).toBe('4.999955');
      expect((await redis.scan('0', 'MATCH', `${prefix}*`, 'COUNT', 10_000))[1].length).toBeGreaterThan(0);

      await example.close();
      expect((await redis.scan('0', 'MATCH', `${prefix}*`, 'COUNT', 10_000))[1]).toEqual([]);
    } finally {
      await example.close();
      if (prefix) await deleteKeysWithPrefix(redis, prefix);
      redis.disconnect();
    }
  });
});

describe('a busy PORT', () => {
  it('is an ExampleConfigError naming PORT and the fix, and nothing started is left running', async () => {
    const { port, server } = await busyPort();
    try {
      const error = await startExample({ port, host: '127.0.0.1', env: {} }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ExampleConfigError);
      expect(error).toMatchObject({ variable: 'PORT' });
      expect((error as Error).message).toBe(
        `PORT: 127.0.0.1:${port} is already in use by another program. Stop it, or start on another port: PORT=${port + 1} npm start`,
      );
    } finally {
      server.close();
    }
  });

  it('makes `npm start` print one line with the fix and exit 1, no stack trace', async () => {
    const { port, server } = await busyPort();
    try {
      const child = npmStart({ PORT: String(port), HOST: '127.0.0.1' });
      const [code] = await once(child, 'exit');
      expect(code).toBe(1);
      expect(child.output.stderr.trim().split('\n')).toEqual([
        `Cannot start: PORT: 127.0.0.1:${port} is already in use by another program. Stop it, or start on another port: PORT=${port + 1} npm start`,
      ]);
      expect(child.output.stdout).not.toMatch(/\bat .*\(.*:\d+:\d+\)/);
    } finally {
      server.close();
    }
  });
});

describe('`npm start` with OPENAI_API_KEY and REDIS_URL already in the environment', () => {
  it.skipIf(!redisUrl)('starts the demo on them, says so, answers, and stops cleanly', async () => {
    const upstream = await createMockLLM({ apiKey: UPSTREAM_KEY });
    const child = npmStart({
      PORT: '0',
      OPENAI_API_KEY: UPSTREAM_KEY,
      OPENAI_BASE_URL: upstream.baseURL,
      REDIS_URL: redisUrl!,
    });
    try {
      await expect
        .poll(() => child.output.stdout, { timeout: 15_000, interval: 100 })
        .toMatch(/Listening on +http:\/\/localhost:\d+/);
      const { stdout } = child.output;
      expect(stdout).toMatch(/Dodo Payments +emulated/);
      expect(stdout).toMatch(
        /Upstream LLM +REAL +http:\/\/127\.0\.0\.1:\d+\/v1\/? \(OPENAI_API_KEY and OPENAI_BASE_URL\)/,
      );
      expect(stdout).toMatch(/Store +Redis +redis:\/\//);
      const url = /Listening on +(http:\/\/localhost:\d+)/.exec(stdout)![1]!;
      const key = /Demo API key +(sk-demo-\S+)/.exec(stdout)![1]!;
      const openai = new OpenAI({ apiKey: key, baseURL: `${url}/v1`, maxRetries: 0 });
      await openai.chat.completions.create({ model: 'gpt-4o-mini', messages: hello });
      expect(upstream.requests()).toHaveLength(1);
      expect(await (await fetch(`${url}/healthz`)).json()).toMatchObject({
        parts: { dodo: 'emulated', upstream: 'real', store: 'redis' },
      });
      child.kill('SIGTERM');
      const [code] = await once(child, 'exit');
      expect(code).toBe(0);
      expect(child.output.stderr).toBe('');
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      await upstream.close();
    }
  });
});
