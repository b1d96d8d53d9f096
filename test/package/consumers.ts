/**
 * The consumer programs the packaging test writes next to the extracted tarball. They are
 * strings, not files under test/, because the repo's own `tsc` would otherwise type-check them
 * against whatever `dist/` happens to hold (the package name resolves to itself in this repo).
 */

/** What a runtime consumer prints, as one JSON line. */
export interface ConsumerReport {
  resolved: { main: string; testing: string };
  mainExports: string[];
  testingExports: string[];
  moneyScale: number;
  price: string;
  billingErrorCode: string;
  mock: { status: number; usage: unknown; expected: { prompt: number; completion: number } };
}

/** Starts the packaged mock LLM and asks it one question: proves the built bundle runs. */
const exercise = `
  const llm = await testing.createMockLLM({ apiKey: 'sk-pack' });
  try {
    const request = { model: 'gpt-4o', messages: [{ role: 'user', content: 'packed and shipped' }] };
    const response = await fetch(llm.baseURL + '/chat/completions', {
      method: 'POST',
      headers: { authorization: 'Bearer sk-pack', 'content-type': 'application/json' },
      body: JSON.stringify(request),
    });
    const answer = await response.json();
    const expected = testing.mockCompletion('chat', request);
    return {
      status: response.status,
      usage: answer.usage,
      expected: { prompt: expected.promptTokens, completion: expected.completionTokens },
    };
  } finally {
    await llm.close();
  }
`;

function report(resolve: string): string {
  return `
const names = (module) => Object.keys(module).filter((name) => name !== 'default' && name !== '__esModule').sort();
async function exerciseMock() {${exercise}}
console.log(JSON.stringify({
  resolved: { main: ${resolve}('express-llm-billing'), testing: ${resolve}('express-llm-billing/testing') },
  mainExports: names(main),
  testingExports: names(testing),
  moneyScale: MONEY_SCALE,
  price: parseUsd('2.50', 'price').toString(),
  billingErrorCode: new BillingError('ERR_PACK', 'packed').code,
  mock: await exerciseMock(),
}));
`;
}

export const esmConsumer = `import { BillingError, MONEY_SCALE, parseUsd } from 'express-llm-billing';
import * as main from 'express-llm-billing';
import * as testing from 'express-llm-billing/testing';
${report('import.meta.resolve')}`;

export const cjsConsumer = `'use strict';
const { BillingError, MONEY_SCALE, parseUsd } = require('express-llm-billing');
const main = require('express-llm-billing');
const testing = require('express-llm-billing/testing');
const { pathToFileURL } = require('node:url');
const resolveUrl = (specifier) => pathToFileURL(require.resolve(specifier)).href;
(async () => {
${report('resolveUrl')}
})().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
`;

/** Type-checked through the `import` conditions (`dist/*.d.ts`). */
export const tsEsmConsumer = `import type { Request, Response } from 'express';
import { Redis } from 'ioredis';
import { createClient, createCluster } from 'redis';
import {
  BillingError,
  type BillingStore,
  GUIDE_TIERS,
  MONEY_SCALE,
  type Money,
  type PricingInput,
  parseUsd,
  RedisStore,
  type Tier,
} from 'express-llm-billing';
import {
  createMockLLM,
  type MockCompletion,
  type MockLLM,
  type MockLLMOptions,
  mockCompletion,
} from 'express-llm-billing/testing';

const scale: 12 = MONEY_SCALE;
const price: Money = parseUsd('2.50', 'price');
const pricing: PricingInput = { 'gpt-4o': { input: '2.50', output: '10.00' } };
const error: BillingError = new BillingError('ERR_X', 'message', { status: 402 });
const status: number = error.status;
const options: MockLLMOptions = { latencyMs: 0, cachedTokens: ({ promptTokens }) => promptTokens };
const completion: MockCompletion = mockCompletion('chat', { model: 'gpt-4o', messages: [] });
const tokens: number = completion.promptTokens;
export async function start(): Promise<MockLLM> {
  return createMockLLM(options);
}
export function storeNow(store: BillingStore): number {
  return store.now();
}
// @ts-expect-error -- types are real (not \`any\`): a name the package does not export is an error.
import { notAnExport } from 'express-llm-billing';
export { scale, price, pricing, status, tokens };

// res.locals.billing is typed through Express's Locals declaration merging: no cast.
export function handler(_req: Request, res: Response): void {
  res.locals.billing.record({ model: 'gpt-4o', inputTokens: 1200, outputTokens: 300 });
  const customer: string = res.locals.billing.customerId;
  // @ts-expect-error -- a usage record names its model and token counts.
  res.locals.billing.record({ inputTokens: 1 });
  res.json({ customer });
}

// With ioredis installed, its types are the real ones: a client that is not one is an error.
export const store = new RedisStore({ client: new Redis({ lazyConnect: true }) });
// @ts-expect-error -- not an ioredis client.
export const wrong = new RedisStore({ client: { get: () => 'nope' } });
// node-redis clients, single and cluster, are accepted as they come from \`redis\`.
export const onNodeRedis = new RedisStore({ client: createClient({ url: 'redis://127.0.0.1:6379' }) });
export const onNodeRedisCluster = new RedisStore({
  client: createCluster({ rootNodes: [{ url: 'redis://127.0.0.1:7000' }] }),
});
export const tiers: readonly Tier[] = GUIDE_TIERS;
`;

/**
 * Type-checked in a folder where neither ioredis nor redis is installed (an app on MemoryStore):
 * the package's declarations must not need either library's types.
 */
export const tsWithoutIoredisConsumer = `import express, { type Request, type Response } from 'express';
import { createBilling, GUIDE_TIERS, MemoryStore, RedisStore, type RedisStoreOptions } from 'express-llm-billing';

const billing = createBilling({
  store: new MemoryStore(),
  customerId: (req: Request) => req.get('x-customer-id'),
  pricing: { 'gpt-4o': { input: '2.50', output: '10.00' } },
});
const app = express();
app.post(
  '/v1/summarize',
  express.json(),
  billing.tierRateLimit({ tiers: GUIDE_TIERS }),
  billing.requireCredits({ model: () => 'gpt-4o' }),
  billing.meterUsage(),
  (_req: Request, res: Response) => {
    res.locals.billing.record({ model: 'gpt-4o', inputTokens: 1200, outputTokens: 300 });
    res.json({ ok: true });
  },
);
export type Client = RedisStoreOptions['client'];
export { app, RedisStore };
`;

/** Type-checked through the `require` conditions (`dist/*.d.cts`). */
export const tsCjsConsumer = `import billing = require('express-llm-billing');
import testing = require('express-llm-billing/testing');
import type { Money } from 'express-llm-billing';

const scale: 12 = billing.MONEY_SCALE;
const price: Money = billing.parseUsd('0.15', 'price');
const store: billing.BillingStore | undefined = undefined;
const options: testing.MockLLMOptions = { tokensPerSecond: 50, faults: { status: 503 } };
const start: (options?: testing.MockLLMOptions) => Promise<testing.MockLLM> = testing.createMockLLM;
const count: number = testing.countTokens('one two');
// @ts-expect-error -- types are real (not \`any\`): a name the package does not export is an error.
billing.notAnExport;
function handler(_req: unknown, res: import('express').Response): void {
  res.locals.billing.record({ model: 'gpt-4o', inputTokens: 1, outputTokens: 1 });
}
export = { scale, price, store, options, start, count, handler };
`;

export const consumerTsconfig = {
  compilerOptions: {
    module: 'NodeNext',
    moduleResolution: 'NodeNext',
    target: 'ES2022',
    lib: ['ES2022'],
    strict: true,
    noEmit: true,
    // The package's own declaration files are checked too: a broken .d.ts must fail here.
    skipLibCheck: false,
    types: ['node'],
  },
  files: ['consumer.mts', 'consumer.cts'],
};
