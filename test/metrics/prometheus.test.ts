import client from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { createBilling } from '../../src/create-billing.js';
import { ConfigError } from '../../src/errors.js';
import { prometheusMetrics, usdForMetrics } from '../../src/metrics/prometheus.js';
import { costOfTokens, type Money, parseUsd, resolvePricing } from '../../src/money.js';
import { MemoryStore } from '../../src/store/memory.js';
import type { BillingStore } from '../../src/store/types.js';
import type { MockLLM } from '../../src/testing/index.js';
import { type OpenAILikeApp, PRICING, startOpenAILikeApp } from '../money-path/openai-like.js';
import { storesUnderTest } from '../support/stores.js';

const stores = await storesUnderTest('metrics');
const PRICES = resolvePricing(PRICING);

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses Prometheus' text exposition format (what prom-client's registry writes). */
function parseExposition(text: string) {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match) throw new Error(`not an exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const [, name, value] of (match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g))
      labels[name!] = value!.replace(/\\(.)/g, '$1');
    samples.push({ name: match[1]!, labels, value: Number(match[3]) });
  }
  return {
    samples,
    /** The sum of the samples of `name` whose labels include `labels`. */
    value(name: string, labels: Record<string, string> = {}): number {
      return samples
        .filter(
          (sample) =>
            sample.name === name &&
            Object.entries(labels).every(([key, value]) => sample.labels[key] === value),
        )
        .reduce((sum, sample) => sum + sample.value, 0);
    },
  };
}

async function scrape(url: string) {
  const response = await fetch(`${url}/metrics`);
  expect(response.status).toBe(200);
  expect(response.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  const text = await response.text();
  return { text, ...parseExposition(text) };
}

/** What the upstream billed per model, exactly. */
function billedByModel(llm: MockLLM): Map<string, Money> {
  const byModel = new Map<string, Money>();
  for (const request of llm.requests()) {
    if (!request.completion || !request.model) continue;
    const cost = costOfTokens(
      PRICES.get(request.model)!,
      request.completion.promptTokens,
      request.completion.completionTokens,
    ).total;
    byModel.set(request.model, (byModel.get(request.model) ?? 0n) + cost);
  }
  return byModel;
}

const ask = (model: string, extra: object = {}) => ({
  model,
  messages: [{ role: 'user', content: 'hello' }],
  max_tokens: 300,
  ...extra,
});

describe.each(stores)('Prometheus metrics (%s)', (_name, createStore) => {
  let app: OpenAILikeApp | undefined;
  afterEach(async () => {
    await app?.close();
    app = undefined;
  });

  async function start(store: BillingStore, chain: Parameters<typeof startOpenAILikeApp>[1] = {}) {
    const registry = new client.Registry();
    const metrics = prometheusMetrics({ registry });
    app = await startOpenAILikeApp(store, chain, {
      shared: { metrics },
      mount: (express, billing) => {
        express.get('/metrics', metrics.handler());
        express.use('/webhooks/dodo', billing.dodoWebhooks());
      },
    });
    app.dodo.emulator.setWebhookUrl(`${app.url}/webhooks/dodo`);
    return app;
  }

  it('counts admissions, refusals by reason, reserved and settled dollars by model, webhooks and Dodo calls', async () => {
    const { url, chat, customerWith, billing, llm, dodo } = await start(await createStore());
    const customer = customerWith('5');
    const broke = customerWith('0');
    dodo.emulator.addCredits(customer, dodo.entitlementId, '1'); // a credit.added webhook
    const answers = await Promise.all([
      chat(customer, ask('gpt-4o')),
      chat(customer, ask('gpt-4o')),
      chat(customer, ask('gpt-4o')),
      chat(customer, ask('gpt-4o-mini', { stream: true, stream_options: { include_usage: true } })),
      chat(customer, ask('gpt-4o-mini')),
    ]);
    await Promise.all(answers.map((answer) => answer.text()));
    expect(answers.map((answer) => answer.status)).toEqual([200, 200, 200, 200, 200]);
    expect((await chat(broke, ask('gpt-4o'))).status).toBe(402);
    expect((await chat('', ask('gpt-4o'))).status).toBe(401);
    expect((await chat(customer, ask('gpt-unpriced'))).status).toBe(400);
    const unsigned = await fetch(`${url}/webhooks/dodo`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ type: 'credit.added', data: {} }),
    });
    expect(unsigned.status).toBe(400);
    await billing.flush();
    await dodo.emulator.settle();

    const scraped = await scrape(url);
    const { value, text } = scraped;
    expect(value('llm_billing_requests_admitted_total', { model: 'gpt-4o' })).toBe(3);
    expect(value('llm_billing_requests_admitted_total', { model: 'gpt-4o-mini' })).toBe(2);
    expect(value('llm_billing_requests_refused_total', { reason: 'insufficient_quota' })).toBe(1);
    expect(value('llm_billing_requests_refused_total', { reason: 'invalid_api_key' })).toBe(1);
    expect(value('llm_billing_requests_refused_total', { reason: 'model_not_priced' })).toBe(1);
    expect(value('llm_billing_requests_refused_total')).toBe(3);

    // Settled dollars per model: the upstream's bill, converted once at the boundary.
    const billed = billedByModel(llm);
    for (const [model, cost] of billed) {
      expect(value('llm_billing_settled_usd_total', { model })).toBeCloseTo(usdForMetrics(cost), 12);
    }
    expect(value('llm_billing_settlements_total', { model: 'gpt-4o', estimated: 'false' })).toBe(3);
    expect(value('llm_billing_settlements_total', { model: 'gpt-4o-mini', estimated: 'false' })).toBe(2);
    const settled = value('llm_billing_settled_usd_total');
    const reserved = value('llm_billing_reserved_usd_total');
    expect(reserved).toBeGreaterThanOrEqual(settled);
    // One estimate error per settled request: together, settled minus reserved.
    expect(value('llm_billing_estimate_error_usd_count')).toBe(5);
    expect(value('llm_billing_estimate_error_usd_sum')).toBeCloseTo(settled - reserved, 9);
    expect(value('llm_billing_balance_view_age_seconds_count')).toBeGreaterThanOrEqual(6);

    // Dodo: balances read for both customers, events ingested.
    expect(
      value('llm_billing_dodo_call_duration_seconds_count', {
        operation: 'creditEntitlements.balances.retrieve',
        outcome: 'ok',
      }),
    ).toBeGreaterThanOrEqual(2);
    expect(
      value('llm_billing_dodo_call_duration_seconds_count', {
        operation: 'usageEvents.ingest',
        outcome: 'ok',
      }),
    ).toBeGreaterThanOrEqual(1);
    expect(value('llm_billing_dodo_call_errors_total')).toBe(0);

    // Webhooks: Dodo's signed deliveries applied; the unsigned one refused with its reason.
    expect(value('llm_billing_webhooks_applied_total', { type: 'credit.added' })).toBeGreaterThanOrEqual(1);
    expect(value('llm_billing_webhooks_refused_total', { reason: 'missing_webhook_headers' })).toBe(1);

    // Delivered: the outbox is empty.
    expect(value('llm_billing_outbox_events', { state: 'waiting' })).toBe(0);
    expect(value('llm_billing_outbox_events', { state: 'leased' })).toBe(0);
    expect(value('llm_billing_outbox_oldest_event_age_seconds')).toBe(0);

    // Bounded labels: no customer id anywhere, models only as priced (or `other`).
    for (const id of [customer, broke]) expect(text).not.toContain(id);
    const models = new Set(scraped.samples.flatMap((sample) => sample.labels.model ?? []));
    for (const model of models) expect([...Object.keys(PRICING), 'other']).toContain(model);
  });

  it('shows a Dodo outage as errors by operation and an outbox that waits and ages, then drains', async () => {
    const { url, chat, customerWith, billing, dodo } = await start(await createStore());
    const customer = customerWith('5');
    dodo.emulator.fault('POST /events/ingest', { status: 503 });
    expect((await chat(customer, ask('gpt-4o'))).status).toBe(200);
    await expect
      .poll(
        async () =>
          (await scrape(url)).value('llm_billing_dodo_call_errors_total', {
            operation: 'usageEvents.ingest',
            error: 'http_503',
          }),
        { timeout: 5_000 },
      )
      .toBeGreaterThanOrEqual(1);
    await new Promise((resolve) => setTimeout(resolve, 20));
    const during = await scrape(url);
    expect(
      during.value('llm_billing_outbox_events', { state: 'waiting' }) +
        during.value('llm_billing_outbox_events', { state: 'leased' }),
    ).toBe(2); // the request's input and output events
    expect(during.value('llm_billing_outbox_oldest_event_age_seconds')).toBeGreaterThan(0);
    expect(
      during.value('llm_billing_dodo_call_duration_seconds_count', {
        operation: 'usageEvents.ingest',
        outcome: 'error',
      }),
    ).toBeGreaterThanOrEqual(1);

    dodo.emulator.clearFaults();
    await billing.flush();
    const after = await scrape(url);
    expect(after.value('llm_billing_outbox_events', { state: 'waiting' })).toBe(0);
    expect(after.value('llm_billing_outbox_oldest_event_age_seconds')).toBe(0);
  });

  it('names each refusal by its reason: the rate tier, the credits, concurrently', async () => {
    const { url, chat, customerWith } = await start(await createStore(), {
      tierRateLimit: { tiers: [{ name: 'one', minSpend: '0', rpm: 2 }] },
    });
    const customer = customerWith('5');
    const broke = customerWith('0');
    const statuses = await Promise.all([
      ...Array.from({ length: 5 }, () => chat(customer, ask('gpt-4o')).then((r) => r.status)),
      chat(broke, ask('gpt-4o')).then((r) => r.status),
    ]);
    expect(statuses.filter((status) => status === 200)).toHaveLength(2);
    expect(statuses.filter((status) => status === 429)).toHaveLength(3);
    expect(statuses.at(-1)).toBe(402);
    const { value } = await scrape(url);
    expect(value('llm_billing_requests_admitted_total')).toBe(2);
    expect(value('llm_billing_requests_refused_total', { reason: 'rate_limit_exceeded' })).toBe(3);
    expect(value('llm_billing_requests_refused_total', { reason: 'insufficient_quota' })).toBe(1);
  });

  it('counts the events Dodo refuses as dead letters', async () => {
    const { url, chat, customerWith, billing } = await start(await createStore(), { requireCredits: false });
    const customer = customerWith('5');
    expect((await chat(customer, ask('gpt-4o'))).status).toBe(200);
    await billing.flush(); // Dodo accepts ingests: a later refusal is the events' own
    expect((await chat('cus_unknown_to_dodo', ask('gpt-4o'))).status).toBe(200);
    await billing.flush().catch(() => {});
    const { value } = await scrape(url);
    expect(value('llm_billing_dead_letters_total')).toBe(2);
    expect(value('llm_billing_outbox_events', { state: 'dead' })).toBe(2);
  });
});

describe('prometheusMetrics', () => {
  it('never lets a failing observer reach the request, and says so once', async () => {
    const store = new MemoryStore();
    let calls = 0;
    const app = await startOpenAILikeApp(
      store,
      {},
      {
        shared: {
          metrics: {
            admitted() {
              calls += 1;
              throw new Error('observer down');
            },
          },
        },
      },
    );
    try {
      const customer = app.customerWith('5');
      for (let i = 0; i < 3; i++) expect((await app.chat(customer, ask('gpt-4o'))).status).toBe(200);
      expect(calls).toBe(3);
      const warnings = app.logger.lines.filter((line) => line.message.includes('admitted() threw'));
      expect(warnings).toHaveLength(1);
    } finally {
      await app.close();
    }
  });

  it('takes a prefix, reuses its metrics on a registry it already filled, and refuses what it cannot use', () => {
    const registry = new client.Registry();
    const first = prometheusMetrics({ registry, prefix: 'proxy_billing_' });
    const second = prometheusMetrics({ registry, prefix: 'proxy_billing_' });
    first.admitted('gpt-4o');
    second.admitted('gpt-4o');
    expect(registry.getSingleMetric('proxy_billing_requests_admitted_total')).toBeDefined();
    expect(registry.getSingleMetric('llm_billing_requests_admitted_total')).toBeUndefined();
    expect(() => prometheusMetrics({ registry, prefix: 'not a prefix' })).toThrow(ConfigError);
    const base = { store: new MemoryStore(), customerId: () => 'c', pricing: PRICING };
    expect(() => createBilling({ ...base, metrics: 5 as never })).toThrow(/`metrics` must be an observer/);
    expect(() => createBilling({ ...base, metrics: { admitted: 'yes' } as never })).toThrow(
      /`metrics.admitted` must be a function/,
    );
  });

  it('converts exact money to dollars once, at the boundary', () => {
    expect(usdForMetrics(parseUsd('0.000001', 'x'))).toBe(0.000001);
    expect(usdForMetrics(parseUsd('12.345678901234', 'x'))).toBe(12.345678901234);
    expect(usdForMetrics(parseUsd('-0.5', 'x'))).toBe(-0.5);
  });
});
