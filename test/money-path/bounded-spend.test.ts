import { randomUUID } from 'node:crypto';
import type { RequestHandler } from 'express';
import { afterEach, describe, expect, it } from 'vitest';
import { parseUsd } from '../../src/money.js';
import type { BillingStore } from '../../src/store/types.js';
import { storesUnderTest } from '../support/stores.js';
import { type OpenAILikeApp, startOpenAILikeApp, upstreamBilled } from './openai-like.js';

const stores = await storesUnderTest('bounded spend');

const usd = (text: string) => parseUsd(text, 'test');
const ask = (content: string, extra: Record<string, unknown> = {}) => ({
  model: 'gpt-4o',
  messages: [{ role: 'user', content }],
  ...extra,
});

describe.each(stores)(
  'spend is bounded by the balance, whatever the request says (%s)',
  (_name, createStore) => {
    let app: OpenAILikeApp | undefined;
    let store: BillingStore;
    afterEach(async () => {
      await app?.close();
      app = undefined;
    });

    async function start(
      ...args: Parameters<typeof startOpenAILikeApp> extends [unknown, ...infer Rest] ? Rest : never
    ) {
      store = await createStore();
      app = await startOpenAILikeApp(store, ...args);
      return app;
    }

    /** Waits until nothing is held, then what the customer was billed locally. */
    async function billedLocally(customer: string, initial: bigint): Promise<bigint> {
      let view = await store.getBalance(customer);
      for (let tries = 0; tries < 100 && (view?.reserved ?? 0n) !== 0n; tries++) {
        await new Promise((resolve) => setTimeout(resolve, 20));
        view = await store.getBalance(customer);
      }
      expect(view?.reserved).toBe(0n);
      return initial - view!.balance;
    }

    it('n: 20 choices are reserved as 20: five concurrent requests never spend more than the balance', async () => {
      const { customerWith, chat, llm } = await start();
      const customer = customerWith('0.40'); // each request can be billed 20 × 900 output = $0.18
      const statuses = await Promise.all(
        Array.from({ length: 5 }, () =>
          chat(customer, ask('tell me', { n: 20, max_tokens: 900 })).then((r) => r.status),
        ),
      );
      expect(statuses.filter((status) => status === 200)).toHaveLength(2);
      expect(statuses.filter((status) => status === 402)).toHaveLength(3);
      const billed = upstreamBilled(llm);
      expect(billed).toBeGreaterThan(usd('0.36'));
      expect(billed).toBeLessThanOrEqual(usd('0.40'));
      expect(await billedLocally(customer, usd('0.40'))).toBe(billed);
    });

    it('without max_tokens the package writes the limit it reserved: ten concurrent requests stay within the balance', async () => {
      const { customerWith, chat, llm } = await start();
      const customer = customerWith('0.10'); // gpt-4o's 16,384 output tokens cost $0.164
      const responses = await Promise.all(
        Array.from({ length: 10 }, () => chat(customer, ask('write a long story'))),
      );
      const admitted = responses.filter((response) => response.status === 200);
      expect(admitted.length).toBeGreaterThan(0);
      // The upstream saw a limit on every request it answered, and no more than the balance covered.
      for (const request of llm.requests()) expect(request.body).toHaveProperty('max_completion_tokens');
      const billed = upstreamBilled(llm);
      expect(billed).toBeLessThanOrEqual(usd('0.10'));
      expect(await billedLocally(customer, usd('0.10'))).toBe(billed);
    });

    it("with outputLimit 'reserve' the request is untouched and the model's whole maximum is held", async () => {
      const { customerWith, chat, llm } = await start({}, { shared: { outputLimit: 'reserve' } });
      const customer = customerWith('0.20'); // covers one gpt-4o request at 16,384 output tokens
      const statuses = await Promise.all(
        Array.from({ length: 10 }, () => chat(customer, ask('write a long story')).then((r) => r.status)),
      );
      expect(statuses.filter((status) => status === 200)).toHaveLength(1);
      expect(llm.requests()[0]!.body).not.toHaveProperty('max_completion_tokens');
      expect(llm.requests()[0]!.completion?.completionTokens).toBe(16_384);
      const billed = upstreamBilled(llm);
      expect(billed).toBeLessThanOrEqual(usd('0.20'));
      expect(await billedLocally(customer, usd('0.20'))).toBe(billed);
    });

    it('tool definitions, earlier tool calls and schemas are estimated: the input never exceeds what was held', async () => {
      const { customerWith, chat, llm } = await start();
      const words = (count: number) => Array.from({ length: count }, (_, i) => `word${i}`).join(' ');
      const body = {
        model: 'gpt-4o',
        max_tokens: 10,
        messages: [
          { role: 'user', content: 'hi' },
          {
            role: 'assistant',
            content: null,
            tool_calls: [
              {
                id: 'call_1',
                type: 'function',
                function: { name: 'lookup', arguments: JSON.stringify({ q: words(3000) }) },
              },
            ],
          },
          { role: 'tool', tool_call_id: 'call_1', content: 'done' },
        ],
        tools: [
          {
            type: 'function',
            function: { name: 'lookup', description: words(3000), parameters: { type: 'object' } },
          },
        ],
        response_format: {
          type: 'json_schema',
          json_schema: { name: 'answer', schema: { type: 'object', description: words(3000) } },
        },
      };
      // $0.01: about 4,000 input tokens; the upstream bills about 9,000 for this request.
      const poor = customerWith('0.01');
      expect((await chat(poor, body)).status).toBe(402);
      expect(llm.requests()).toHaveLength(0);
      const rich = customerWith('1');
      expect((await chat(rich, body)).status).toBe(200);
      const billed = upstreamBilled(llm);
      expect(llm.requests()[0]!.completion!.promptTokens).toBeGreaterThan(9_000);
      expect(await billedLocally(rich, usd('1'))).toBe(billed);
    });

    it('a handler that sets its headers with writeHead alone (x-powered-by off) is billed its full usage, JSON and SSE', async () => {
      const writeHeadOnly: (upstream: import('openai').default) => RequestHandler =
        (upstream) => async (req, res) => {
          if (!req.body.stream) {
            const answer = JSON.stringify(await upstream.chat.completions.create(req.body));
            res.writeHead(200, {
              'content-type': 'application/json',
              'content-length': Buffer.byteLength(answer),
            });
            res.end(answer);
            return;
          }
          const stream = await upstream.chat.completions.create({
            ...req.body,
            stream_options: { include_usage: true },
          });
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          for await (const chunk of stream as unknown as AsyncIterable<unknown>)
            res.write(`data: ${JSON.stringify(chunk)}\n\n`);
          res.end('data: [DONE]\n\n');
        };
      const { customerWith, chat, llm } = await start({}, { handler: writeHeadOnly });
      const customer = customerWith('1');
      expect((await chat(customer, ask('hello there', { max_tokens: 40 }))).status).toBe(200);
      const streamed = await chat(customer, ask('hello there', { max_tokens: 40, stream: true }));
      await streamed.text();
      const billed = upstreamBilled(llm);
      expect(llm.requests().every((request) => request.completion!.completionTokens === 40)).toBe(true);
      expect(await billedLocally(customer, usd('1'))).toBe(billed);
    });

    it('refuses a model name Dodo could not record, even with defaultPrice, before anything is held', async () => {
      const { customerWith, chat, llm } = await start(
        {},
        { shared: { defaultPrice: { input: '1', output: '1' } } },
      );
      const customer = customerWith('1');
      const response = await chat(customer, ask('hi', { model: 'm'.repeat(600), max_tokens: 5 }));
      expect(response.status).toBe(400);
      expect(((await response.json()) as { error: { param: string } }).error.param).toBe('model');
      expect(llm.requests()).toHaveLength(0);
      expect((await store.getBalance(customer))?.reserved ?? 0n).toBe(0n);
    });

    it('a repeated request id is the same request: refused with 409 while in flight and once billed, never free', async () => {
      const { customerWith, chat, llm } = await start(
        {},
        {
          shared: {
            requestId: (req: { get(name: string): string | undefined }) =>
              req.get('x-request-id') ?? randomUUID(),
          },
        },
      );
      const customer = customerWith('1');
      const id = { 'x-request-id': 'client-chosen-id' };
      const statuses = await Promise.all(
        Array.from({ length: 5 }, () =>
          chat(customer, ask('hello', { max_tokens: 20 }), id).then((r) => r.status),
        ),
      );
      expect(statuses.filter((status) => status === 200)).toHaveLength(1);
      expect(statuses.filter((status) => status === 409)).toHaveLength(4);
      const again = await chat(customer, ask('hello', { max_tokens: 20 }), id);
      expect(again.status).toBe(409);
      expect(((await again.json()) as { error: { code: string } }).error.code).toBe('request_id_reused');
      expect(llm.requests()).toHaveLength(1);
      expect(await billedLocally(customer, usd('1'))).toBe(upstreamBilled(llm));
    });

    it('TPM counts the output a request can generate: ten requests without max_tokens never pass 2,000 TPM', async () => {
      const { customerWith, chat, llm } = await start({
        tierRateLimit: { tiers: [{ name: 'only', minSpend: '0', rpm: 1_000, tpm: 2_000 }] },
      });
      const customer = customerWith('10');
      const prompt = Array.from({ length: 150 }, (_, i) => `w${i}`).join(' '); // ~1,000 tokens at most
      const statuses = await Promise.all(
        Array.from({ length: 10 }, () => chat(customer, ask(prompt)).then((r) => r.status)),
      );
      expect(statuses.filter((status) => status === 200).length).toBeGreaterThanOrEqual(1);
      expect(statuses.filter((status) => status === 429).length).toBeGreaterThanOrEqual(8);
      // What the upstream generated, all requests together, stayed within the minute's tokens.
      const used = llm.requests().reduce((sum, request) => sum + request.completion!.totalTokens, 0);
      expect(used).toBeLessThanOrEqual(2_000);
      expect(await billedLocally(customer, usd('10'))).toBe(upstreamBilled(llm));
    });

    it('a hard cap holds each request’s estimate atomically: concurrent requests of one subscriber pass it by at most one', async () => {
      const cap = 3_000;
      const { customerWith, chat, llm } = await start({
        softCapRouter: {
          plans: { prod_plus: { softCap: { tokens: cap }, hardCap: { tokens: cap }, downgrade: {} } },
        },
      });
      const customer = customerWith('0');
      const subscription = {
        subscriptionId: 'sub_capped',
        productId: 'prod_plus',
        status: 'active',
        quantity: 1,
        periodStart: Date.now() - 1_000,
        periodEnd: Date.now() + 30 * 86_400_000,
        updatedAt: 1,
      };
      await store.putSubscription(customer, subscription);
      const statuses = await Promise.all(
        Array.from({ length: 20 }, () =>
          chat(customer, ask('hello', { max_tokens: 400 })).then((r) => r.status),
        ),
      );
      expect(statuses.filter((status) => status === 429).length).toBeGreaterThan(0);
      const served = llm.requests().map((request) => request.completion!.totalTokens);
      const largest = Math.max(...served);
      // Each request held at most ~450 tokens: the cap admits until used and held reach it.
      expect(served.reduce((sum, tokens) => sum + tokens, 0)).toBeLessThanOrEqual(cap + largest);
      expect(served.length).toBeLessThan(20);
    });

    it('answers 400, naming the field, for an n no upstream accepts', async () => {
      const { customerWith, chat, llm } = await start();
      const customer = customerWith('1');
      for (const n of [0, 129, 1.5, '3']) {
        const response = await chat(customer, ask('hi', { n }));
        expect(response.status).toBe(400);
        expect(((await response.json()) as { error: { param: string } }).error.param).toBe('n');
      }
      expect(llm.requests()).toHaveLength(0);
    });
  },
);
