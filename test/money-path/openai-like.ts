import type { AddressInfo } from 'node:net';
import express, { type Express, type RequestHandler } from 'express';
import OpenAI from 'openai';
import type { ChatCompletionCreateParamsStreaming } from 'openai/resources/chat/completions';
import { type Billing, type ChainOptions, createBilling } from '../../src/create-billing.js';
import {
  costOfTokens,
  formatCredits,
  type Money,
  type PricingInput,
  parseUsd,
  resolvePricing,
  unitsPerCredit,
} from '../../src/money.js';
import type { BillingStore } from '../../src/store/types.js';
import { createMockLLM, type MockLLM } from '../../src/testing/index.js';
import { recordingLogger, startDodo } from '../support/billing-app.js';

/**
 * The models' real output ceilings: a request that sets no limit may be billed up to these
 * (16,384 for gpt-4o, 100,000 for o1).
 */
export const MAX_OUTPUT = { 'gpt-4o': 16_384, 'gpt-4o-mini': 16_384, o1: 100_000 } as const;

export const PRICING: PricingInput = {
  'gpt-4o': { input: '2.50', output: '10.00', maxOutputTokens: MAX_OUTPUT['gpt-4o'] },
  'gpt-4o-mini': { input: '0.15', output: '0.60', maxOutputTokens: MAX_OUTPUT['gpt-4o-mini'] },
  o1: { input: '15.00', output: '60.00', maxOutputTokens: MAX_OUTPUT.o1 },
};
const PRICES = resolvePricing(PRICING);

/**
 * An upstream that bills the way OpenAI does, at its worst for the merchant: prompt tokens from
 * the whole request (tool definitions, tool-call arguments, schemas, 3 per message), `n`
 * choices, and output to the limit — the request's, or the model's real maximum when it sets
 * none.
 */
export function openAILikeUpstream(): Promise<MockLLM> {
  return createMockLLM({ wholeRequestPrompt: true, maxOutputTokens: MAX_OUTPUT, fillToCap: true });
}

/** What the upstream billed the merchant for every request it answered: the truth to bound. */
export function upstreamBilled(llm: MockLLM): Money {
  let total = 0n;
  for (const request of llm.requests()) {
    const completion = request.completion;
    if (!completion || !request.model) continue;
    const price = PRICES.get(request.model);
    if (!price) throw new Error(`no price for ${request.model}`);
    total += costOfTokens(price, completion.promptTokens, completion.completionTokens).total;
  }
  return total;
}

/** A proxy as an app writes it: the request body forwarded as it is, JSON or SSE passed through. */
export function forwardingProxy(upstream: OpenAI): RequestHandler {
  return async (req, res) => {
    if (!req.body.stream) {
      res.json(await upstream.chat.completions.create(req.body));
      return;
    }
    res.setHeader('content-type', 'text/event-stream');
    const stream = await upstream.chat.completions.create(req.body as ChatCompletionCreateParamsStreaming);
    for await (const chunk of stream) res.write(`data: ${JSON.stringify(chunk)}\n\n`);
    res.end('data: [DONE]\n\n');
  };
}

export interface OpenAILikeApp {
  url: string;
  billing: Billing;
  llm: MockLLM;
  dodo: Awaited<ReturnType<typeof startDodo>>;
  logger: ReturnType<typeof recordingLogger>;
  /** A new customer holding `usd` dollars of credits (credits are cents). */
  customerWith(usd: string): string;
  /** POSTs a chat completion body as `customer`. */
  chat(customer: string, body: object, headers?: Record<string, string>): Promise<globalThis.Response>;
  close(): Promise<void>;
}

/** The billing chain on `POST /v1/chat/completions` in front of an OpenAI-like upstream. */
export async function startOpenAILikeApp(
  store: BillingStore,
  chain: ChainOptions = {},
  options: {
    handler?: (upstream: OpenAI) => RequestHandler;
    shared?: Record<string, unknown>;
    /** Mounts routes of the app's own before the body parser (webhooks, `/metrics`). */
    mount?: (app: Express, billing: Billing) => void;
  } = {},
): Promise<OpenAILikeApp> {
  const dodo = await startDodo();
  const llm = await openAILikeUpstream();
  const logger = recordingLogger();
  const billing = createBilling({
    store,
    dodo: dodo.emulator.client({ maxRetries: 0 }),
    creditEntitlementId: dodo.entitlementId,
    customerId: (req) => req.get('x-customer') || undefined,
    pricing: PRICING,
    logger,
    ...options.shared,
  });
  const upstream = new OpenAI({ apiKey: 'upstream', baseURL: llm.baseURL, maxRetries: 0 });
  const app = express().disable('x-powered-by');
  options.mount?.(app, billing);
  app.use(express.json({ limit: '4mb' }));
  app.post(
    '/v1/chat/completions',
    billing.chain({ meterUsage: { flushIntervalMs: 20, maxBackoffMs: 100 }, ...chain }),
    (options.handler ?? forwardingProxy)(upstream),
  );
  const server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    billing,
    llm,
    dodo,
    logger,
    customerWith(usd) {
      const customer = dodo.emulator.createCustomer({ email: `${Math.random()}@example.com` }).customer_id;
      // Credits are cents.
      dodo.emulator.setBalance(
        customer,
        dodo.entitlementId,
        formatCredits(parseUsd(usd, 'usd'), unitsPerCredit(100)),
      );
      return customer;
    },
    chat(customer, body, headers = {}) {
      return fetch(`${url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-customer': customer, ...headers },
        body: JSON.stringify(body),
      });
    },
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      await billing.close();
      await llm.close();
      await dodo.emulator.close();
    },
  };
}
