import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import DodoPayments from 'dodopayments';
import express, { type Request, type RequestHandler, type Response } from 'express';
import { Redis } from 'ioredis';
import OpenAI from 'openai';
import type { BillingStore } from '../src/index.js';

/** One variant of the benchmark, serving `POST /v1/chat/completions` in this process. */
const [variantAndBuild = 'bare', baseURL = '', apiKey = '', entitlementId = '', upstreamURL = ''] =
  process.argv.slice(2);
/**
 * `<variant>@<label>` runs the variant on a build kept in `.bench-builds/<label>/` (a copy of
 * `dist/` from before a change), so a change and what it replaces are measured in one run.
 */
const [variant = 'bare', build] = variantAndBuild.split('@');

// The published build, as users run it (`npm run bench` builds first); typed by the sources.
const { createBilling, MemoryStore, RedisStore }: typeof import('../src/index.js') = await import(
  new URL(build ? `../.bench-builds/${build}/index.js` : '../dist/index.js', import.meta.url).href
);
const dodo = new DodoPayments({ bearerToken: apiKey, baseURL, maxRetries: 0 });

const PRICING = {
  'gpt-4o': { input: '2.50', output: '10.00', maxOutputTokens: 16_384 },
  'gpt-4o-mini': { input: '0.15', output: '0.60', maxOutputTokens: 16_384 },
};

/** The upstream LLM's answer, as every variant returns it: OpenAI-shaped, with usage. */
const cannedCompletion: RequestHandler = (req: Request, res: Response) => {
  res.json({
    id: 'chatcmpl-bench',
    object: 'chat.completion',
    created: 1_790_000_000,
    model: req.body.model,
    choices: [
      { index: 0, message: { role: 'assistant', content: 'Hello from the bench.' }, finish_reason: 'stop' },
    ],
    usage: { prompt_tokens: 120, completion_tokens: 30, total_tokens: 150 },
  });
};

/** A proxy's handler, as an app writes it: the `openai` SDK calls an upstream (the mock LLM). */
const upstream = new OpenAI({ apiKey: 'bench', baseURL: upstreamURL, maxRetries: 0 });
const proxiedCompletion: RequestHandler = async (req, res) => {
  res.json(await upstream.chat.completions.create(req.body));
};

/** `<variant>-proxy` proxies to the mock LLM instead of answering a canned completion. */
const completion = variant.endsWith('-proxy') ? proxiedCompletion : cannedCompletion;
const stack = variant.replace(/-proxy$/, '');

const customerOf = (req: Request) => req.get('x-customer') || undefined;

const tiers = [{ name: 'bench', minSpend: '0', rpm: 1_000_000_000, tpm: 1_000_000_000 }];
const plans = { prod_plus: { softCap: { tokens: 1_000_000 }, downgrade: { 'gpt-4o': 'gpt-4o-mini' } } };

function billingOn(store: BillingStore) {
  return createBilling({
    store,
    dodo,
    creditEntitlementId: entitlementId,
    customerId: customerOf,
    pricing: PRICING,
    creditsPerDollar: 100,
  });
}

/** The whole stack as users mount it: one `billing.chain()` (tiers, soft caps, credits, metering). */
function billingChain(store: BillingStore): RequestHandler[] {
  return [billingOn(store).chain({ tierRateLimit: { tiers }, softCapRouter: { plans } })];
}

/** One middleware on its own (`only-<name>`), to see what each costs. */
function single(name: string): RequestHandler[] {
  const billing = billingOn(new MemoryStore());
  const chain = {
    tier: () => billing.tierRateLimit({ tiers }),
    softcap: () => billing.softCapRouter({ plans }),
    credits: () => billing.requireCredits(),
    meter: () => billing.meterUsage(),
    money: () => billing.chain(),
  }[name];
  if (!chain) throw new Error(`unknown middleware ${name}`);
  return [chain()];
}

/** The seed's proxy: an awaited balance read before and an awaited ingest after every request. */
const naive: RequestHandler = async (req, res) => {
  const customerId = customerOf(req)!;
  const balance = await dodo.creditEntitlements.balances.retrieve(customerId, {
    credit_entitlement_id: entitlementId,
  });
  if (Number(balance.balance) <= 0) {
    res.status(402).json({ error: 'Insufficient credits. Please top up.' });
    return;
  }
  const requestId = randomUUID();
  const timestamp = new Date().toISOString();
  await dodo.usageEvents.ingest({
    events: [
      {
        event_id: `req_${requestId}`,
        customer_id: customerId,
        event_name: 'llm.input_tokens',
        timestamp,
        metadata: { model: 'gpt-4o', tokens: 120 },
      },
      {
        event_id: `req_${requestId}_out`,
        customer_id: customerId,
        event_name: 'llm.output_tokens',
        timestamp,
        metadata: { model: 'gpt-4o', tokens: 30 },
      },
    ],
  });
  cannedCompletion(req, res, () => {});
};

async function middlewares(): Promise<RequestHandler[]> {
  if (stack === 'bare') return [completion];
  if (stack === 'naive') return [naive];
  if (stack === 'memory') return [...billingChain(new MemoryStore()), completion];
  if (stack.startsWith('only-')) return [...single(stack.slice(5)), completion];
  if (stack === 'redis') {
    const client = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', {
      enableAutoPipelining: process.env.BENCH_AUTOPIPELINE === '1',
    });
    // Keys as long as users' (the default prefix is `elb:`), unique to this server process.
    const prefix = `elb:${process.pid.toString(36)}:`;
    return [...billingChain(new RedisStore({ client, prefix })), completion];
  }
  throw new Error(`unknown variant ${variant}`);
}

const app = express();
app.use(express.json());
app.get('/__cpu', (_req, res) => {
  res.json(process.cpuUsage());
});
app.post('/v1/chat/completions', ...(await middlewares()));
const server = app.listen(0, '127.0.0.1', () => {
  process.send?.({ type: 'ready', port: (server.address() as AddressInfo).port });
});
/**
 * `BENCH_ALLOCATIONS=<dir>`: a sampling heap profile that keeps the objects garbage collection
 * took too, so it shows what each function allocates (what the collector works for), written
 * when the server stops.
 */
const allocationsDir = process.env.BENCH_ALLOCATIONS;
let writeAllocations: (() => Promise<void>) | undefined;
if (allocationsDir) {
  const { Session } = await import('node:inspector/promises');
  const { mkdir, writeFile } = await import('node:fs/promises');
  const session = new Session();
  session.connect();
  await session.post('HeapProfiler.startSampling', {
    samplingInterval: 4096,
    includeObjectsCollectedByMajorGC: true,
    includeObjectsCollectedByMinorGC: true,
  } as never);
  writeAllocations = async () => {
    const { profile } = (await session.post('HeapProfiler.stopSampling')) as { profile: unknown };
    await mkdir(allocationsDir, { recursive: true });
    await writeFile(
      `${allocationsDir}/${variantAndBuild}-${process.pid}.heapprofile`,
      JSON.stringify(profile),
    );
  };
}
// Exit normally on SIGINT so `--cpu-prof` can write its profile.
process.on('SIGINT', () => {
  void (writeAllocations?.() ?? Promise.resolve()).finally(() => process.exit(0));
});
