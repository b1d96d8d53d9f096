import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MAX_BODY_DEPTH } from '../src/estimate/body-walk.js';
import { BodyShapeError, RequestEstimate, RequestFieldError } from '../src/estimate/index.js';
import { estimateInputTokens, utf8ByteTokens } from '../src/estimate/input.js';
import { readOutputRequest } from '../src/estimate/output.js';
import { costOfTokens, parseUsd } from '../src/money.js';
import { resolveRequestSettings } from '../src/request-settings.js';
import { mockCompletion } from '../src/testing/index.js';

const BOUND = { estimateTokens: utf8ByteTokens, imageTokens: 1445 };
const settings = (extra: Record<string, unknown> = {}) =>
  resolveRequestSettings(
    {
      customerId: () => 'c',
      pricing: { 'gpt-4o': { input: '2.50', output: '10.00', maxOutputTokens: 16_384 } },
      ...extra,
    },
    'test',
  );

describe('the input estimate', () => {
  it('counts every string of the body, keys and scalars, one token per UTF-8 byte', () => {
    // "hi" (2 + 1), "user" (4 + 1), "gpt-4o" (6 + 1); keys model, messages, role, content (24);
    // three objects or arrays (3).
    expect(estimateInputTokens({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }, BOUND)).toBe(
      42,
    );
    // A character outside ASCII counts its bytes: 客 is 3.
    expect(estimateInputTokens({ a: '客' }, BOUND) - estimateInputTokens({ a: 'x' }, BOUND)).toBe(2);
  });

  it('counts tool definitions, earlier tool-call arguments and schemas — what the upstream bills', () => {
    const words = 'alpha beta gamma '.repeat(200);
    const base = { model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] };
    for (const extra of [
      { tools: [{ type: 'function', function: { name: 'f', description: words } }] },
      { messages: [{ role: 'assistant', tool_calls: [{ function: { name: 'f', arguments: words } }] }] },
      { response_format: { type: 'json_schema', json_schema: { schema: { description: words } } } },
    ]) {
      expect(estimateInputTokens({ ...base, ...extra }, BOUND)).toBeGreaterThan(Buffer.byteLength(words));
    }
  });

  it('gives each image its allowance, and an embedded file its decoded size', () => {
    const image = { type: 'image_url', image_url: { url: `data:image/png;base64,${'A'.repeat(100_000)}` } };
    const withImage = estimateInputTokens({ messages: [{ role: 'user', content: [image] }] }, BOUND);
    const without = estimateInputTokens({ messages: [{ role: 'user', content: [] }] }, BOUND);
    expect(withImage - without).toBe(1445 + 1);
    const file = `data:application/pdf;base64,${'A'.repeat(4_000)}`;
    // The object (1), its key (4), the file (3 bytes for every 4 base64 characters).
    expect(estimateInputTokens({ file }, BOUND)).toBe(1 + 4 + Math.ceil((file.length * 3) / 4));
  });

  it('is never below what an OpenAI-like upstream counts, for any text of any script', () => {
    fc.assert(
      fc.property(
        fc.array(fc.string({ unit: 'grapheme', maxLength: 200 }), { minLength: 1, maxLength: 5 }),
        (texts) => {
          const body = {
            model: 'gpt-4o',
            messages: texts.map((content) => ({ role: 'user', content })),
            tools: [{ description: texts.join(' ') }],
          };
          const billed = mockCompletion('chat', body, { wholeRequestPrompt: true }).promptTokens;
          expect(estimateInputTokens(body, BOUND)).toBeGreaterThanOrEqual(billed);
        },
      ),
    );
  });

  it('refuses a body nested too deep or too wide, without recursion', () => {
    let deep: unknown = 'x';
    for (let i = 0; i < MAX_BODY_DEPTH + 1; i++) deep = [deep];
    expect(() => estimateInputTokens({ messages: deep }, BOUND)).toThrow(BodyShapeError);
    let veryDeep: unknown = 'x';
    for (let i = 0; i < 200_000; i++) veryDeep = [veryDeep];
    expect(() => estimateInputTokens({ messages: veryDeep }, BOUND)).toThrow(BodyShapeError);
    expect(() => estimateInputTokens({ messages: new Array(600_000).fill(0) }, BOUND)).toThrow(
      BodyShapeError,
    );
  });
});

describe('the output request', () => {
  it('multiplies by n, or best_of when larger, and takes the largest limit field', () => {
    expect(readOutputRequest({ messages: [], n: 20, max_tokens: 900 })).toEqual({
      choices: 20,
      limit: 900,
      limitField: 'max_completion_tokens',
    });
    expect(readOutputRequest({ prompt: 'x', n: 2, best_of: 5 })).toMatchObject({
      choices: 5,
      limitField: 'max_tokens',
    });
    expect(readOutputRequest({ input: 'x', max_output_tokens: 10, max_tokens: 30 })).toMatchObject({
      limit: 30,
      limitField: 'max_output_tokens',
    });
    expect(readOutputRequest({ messages: [], max_tokens: null })).toMatchObject({ limit: undefined });
  });

  it('refuses values no upstream accepts, naming the field', () => {
    for (const [field, value] of [
      ['n', 0],
      ['n', 129],
      ['n', '2'],
      ['best_of', 21],
      ['max_tokens', 0],
      ['max_tokens', 1.5],
      ['max_completion_tokens', -1],
    ] as const) {
      expect(() => readOutputRequest({ [field]: value })).toThrow(RequestFieldError);
    }
  });
});

describe('what a request can cost', () => {
  const gpt4o = { model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] };

  it('holds the model’s maximum output when the request sets no limit, and its own limit otherwise', () => {
    const open = new RequestEstimate('gpt-4o', gpt4o, settings());
    expect(open.maxOutputPerChoice).toBe(16_384);
    expect(open.maxCost()).toBe(costOfTokens(open.price!, open.inputTokens, 16_384).total);
    const limited = new RequestEstimate('gpt-4o', { ...gpt4o, n: 3, max_tokens: 100_000 }, settings());
    // A limit beyond the model's own is the model's.
    expect(limited.maxOutputPerChoice).toBe(16_384);
    expect(limited.maxTokens).toBe(limited.inputTokens + 3 * 16_384);
  });

  it('pays for the output a held amount covers, floored, within the maximum', () => {
    const estimate = new RequestEstimate('gpt-4o', { ...gpt4o, n: 2 }, settings());
    const input = costOfTokens(estimate.price!, estimate.inputTokens, 0).total;
    // $0.001 of output at $10/1M for two choices: 50 tokens each.
    expect(estimate.outputPerChoiceFor(input + parseUsd('0.001', 'test'))).toBe(50);
    expect(estimate.outputPerChoiceFor(estimate.maxCost())).toBe(16_384);
    expect(estimate.minCost()).toBe(costOfTokens(estimate.price!, estimate.inputTokens, 2 * 16).total);
  });

  it("with outputLimit 'reserve', holds the whole maximum and never less", () => {
    const estimate = new RequestEstimate('gpt-4o', gpt4o, settings({ outputLimit: 'reserve' }));
    expect(estimate.writesLimit).toBe(false);
    expect(estimate.minCost()).toBe(estimate.maxCost());
  });
});
