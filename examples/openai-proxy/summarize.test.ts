import { afterAll, beforeAll, expect, it } from 'vitest';
import { costOfTokens, parseUsd, resolvePricing } from '../../src/index.js';
import { mockCompletion } from '../../src/testing/index.js';
import { PRICING } from './billing-config.js';
import { type RunningExample, startExample } from './start.js';
import { SUMMARY_INSTRUCTIONS, SUMMARY_MODEL } from './summarize.js';

let example: RunningExample;

beforeAll(async () => {
  example = await startExample({ port: 0, env: {} });
});
afterAll(() => example?.close());

it('POST /v1/summarize answers its own JSON and is billed exactly the upstream call it made', async () => {
  const services = example.embedded!;
  const buyer = services.addCustomer({ dollars: '5.00' });
  const text = 'The quick brown fox jumps over the lazy dog near the river bank';
  const response = await fetch(`${example.url}/v1/summarize`, {
    method: 'POST',
    headers: { authorization: `Bearer ${buyer.apiKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ text }),
  });
  expect(response.status).toBe(200);
  const expected = mockCompletion('chat', {
    model: SUMMARY_MODEL,
    messages: [
      { role: 'system', content: SUMMARY_INSTRUCTIONS },
      { role: 'user', content: text },
    ],
    max_tokens: 200,
  });
  expect(await response.json()).toEqual({ summary: expected.text, words: expected.tokens.length });

  const price = resolvePricing(PRICING).get(SUMMARY_MODEL)!;
  const cost = costOfTokens(price, expected.promptTokens, expected.completionTokens).total;
  await expect
    .poll(async () => (await example.wiring.store.getBalance(buyer.customerId))?.balance)
    .toBe(parseUsd('5', 'test') - cost);
  await example.billing.flush();
  const events = services.emulator.ingestedEvents({ customerId: buyer.customerId });
  // Weighted meters (base $0.05 per 1M): GPT-4o-mini weighs 3 per input and 12 per output token.
  expect(
    events.map((event) => [event.event_name, event.metadata?.raw_tokens, event.metadata?.tokens]),
  ).toEqual([
    ['llm.input_tokens', expected.promptTokens, 3 * expected.promptTokens],
    ['llm.output_tokens', expected.completionTokens, 12 * expected.completionTokens],
  ]);
});
