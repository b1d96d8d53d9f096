import type { RequestHandler } from 'express';
import { describe, expect, it } from 'vitest';
import { MemoryStore } from '../../src/store/memory.js';
import { type BillingAppOptions, chat } from '../support/billing-app.js';
import { appsOnEmulator } from '../support/emulator-apps.js';

/**
 * A body given to `res.json` is billed from the object itself (it is not parsed again from the
 * bytes Express serialised), and only where the object is what was sent: anything that makes
 * the bytes differ from the object is billed from the bytes.
 */
describe('meterUsage reads the object given to res.json', () => {
  const emulated = appsOnEmulator();

  const REQUEST = { model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }], max_tokens: 100 };
  const completion = (prompt: number, completionTokens: number, content = 'ok') => ({
    id: 'chatcmpl-json',
    object: 'chat.completion',
    model: 'gpt-4o',
    choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: 'stop' }],
    usage: {
      prompt_tokens: prompt,
      completion_tokens: completionTokens,
      total_tokens: prompt + completionTokens,
    },
  });

  /** What one request is billed (x-billing-cost) and whether it was estimated. */
  async function billedFor(handler: RequestHandler, options: BillingAppOptions['before'] = undefined) {
    const customer = emulated.customerWith('1000');
    const app = await emulated.start({
      store: new MemoryStore(),
      handler,
      before: options,
      requireCredits: { maxJsonBytes: 1024 },
      meterUsage: { maxJsonBytes: 1024 },
    });
    const response = await chat(app, customer, REQUEST);
    const text = await response.text();
    return {
      status: response.status,
      cost: response.headers.get('x-billing-cost'),
      estimated: response.headers.get('x-billing-estimated'),
      text,
    };
  }

  // 1000 × $2.50/1M + 20 × $10/1M
  const COST_1000_20 = '0.0027';

  it('bills the usage of a body larger than maxJsonBytes exactly (it is never buffered nor parsed)', async () => {
    const billed = await billedFor((_req, res) => {
      res.json(completion(1000, 20, 'x'.repeat(5000)));
    });
    expect(billed).toMatchObject({ status: 200, cost: COST_1000_20, estimated: null });
  });

  it('bills what was sent when the handler changes the body after res.json', async () => {
    const billed = await billedFor((_req, res) => {
      const body = completion(1000, 20);
      res.json(body);
      body.usage.completion_tokens = 0;
      body.usage.prompt_tokens = 0;
    });
    expect(billed.cost).toBe(COST_1000_20);
  });

  it('bills the bytes when usage serialises differently (toJSON), not the object', async () => {
    const billed = await billedFor((_req, res) => {
      const body = completion(1, 1);
      Object.assign(body.usage, {
        toJSON: () => ({ prompt_tokens: 1000, completion_tokens: 20, total_tokens: 1020 }),
      });
      res.json(body);
    });
    expect(billed.cost).toBe(COST_1000_20);
  });

  it("bills the bytes when the app's json replacer changes what is sent", async () => {
    const billed = await billedFor(
      (_req, res) => {
        res.json(completion(1, 1));
      },
      (app) => {
        app.set('json replacer', (key: string, value: unknown) =>
          key === 'prompt_tokens' ? 1000 : key === 'completion_tokens' ? 20 : value,
        );
      },
    );
    expect(billed.cost).toBe(COST_1000_20);
  });

  it('answers a second res.json as Express does (ERR_HTTP_HEADERS_SENT) and sends the first intact', async () => {
    const first = completion(1000, 20, 'the first answer, longer than the second');
    let refusal: unknown;
    const billed = await billedFor((_req, res) => {
      res.json(first);
      try {
        res.json(completion(1, 1));
      } catch (error) {
        refusal = error;
      }
    });
    expect((refusal as { code?: string } | undefined)?.code).toBe('ERR_HTTP_HEADERS_SENT');
    expect(JSON.parse(billed.text)).toEqual(first);
    expect(billed.cost).toBe(COST_1000_20);
  });

  it('forgets a body JSON cannot encode (res.json threw, nothing was sent) and bills the answer that follows', async () => {
    let firstThrew = false;
    const billed = await billedFor((_req, res) => {
      try {
        res.json({ ...completion(1, 1), id: 10n });
      } catch {
        firstThrew = true;
      }
      res.json(completion(1000, 20));
    });
    expect(firstThrew).toBe(true);
    expect(billed.cost).toBe(COST_1000_20);
  });
});
