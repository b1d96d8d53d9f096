import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { estimateInputTokens, utf8ByteTokens } from '../../src/estimate/input.js';
import { mockCompletion } from '../../src/testing/index.js';
import { costOf, startTrackedApp, type TrackedApp } from './support.js';

const SUMMARY = {
  model: 'gpt-4o',
  messages: [{ role: 'user' as const, content: 'one two three four five six seven' }],
  max_tokens: 30,
};
const STORY = {
  model: 'gpt-4o',
  messages: [
    { role: 'system' as const, content: 'You tell stories.' },
    { role: 'user' as const, content: 'alpha beta gamma delta epsilon zeta eta theta iota kappa lambda' },
  ],
  max_tokens: 12,
};
const LONG = {
  model: 'gpt-4o',
  messages: [{ role: 'user' as const, content: Array.from({ length: 60 }, (_, i) => `word${i}`).join(' ') }],
  max_tokens: 60,
};

describe('trackOpenAI: a handler that calls OpenAI and answers its own JSON', () => {
  let t: TrackedApp;

  beforeAll(async () => {
    t = await startTrackedApp({ tokensPerSecond: 400 });
  });
  afterAll(() => t.close());
  afterEach(() => {
    t.llm.setFaults(undefined);
    t.dodo.emulator.clearFaults();
  });

  it('bills both calls of a handler, one JSON and one streamed, exactly', async () => {
    t.setHandler(async (_req, res) => {
      const summary = await t.openai.chat.completions.create(SUMMARY);
      const stream = await t.openai.chat.completions.create({ ...STORY, stream: true });
      let story = '';
      let chunks = 0;
      // Every chunk has a choice: the usage chunk tracking asked for is not passed on.
      for await (const chunk of stream) {
        chunks += 1;
        story += chunk.choices[0]!.delta.content ?? '';
      }
      res.json({ summary: summary.choices[0]?.message.content, story, chunks });
    });
    const customer = t.customerWithOneDollar();
    const requestId = randomUUID();
    const response = await t.post(customer, requestId);
    expect(response.status).toBe(200);

    const summary = mockCompletion('chat', SUMMARY);
    const story = mockCompletion('chat', STORY);
    expect(await response.json()).toEqual({
      summary: summary.text,
      story: story.text,
      chunks: story.tokens.length + 2, // role chunk, one per token, finish chunk
    });
    const streamed = t.llm.requests().find((request) => request.stream);
    expect(streamed?.body).toMatchObject({ stream_options: { include_usage: true } });

    const cost =
      costOf('gpt-4o', summary.promptTokens, summary.completionTokens) +
      costOf('gpt-4o', story.promptTokens, story.completionTokens);
    await expect.poll(() => t.spent(customer)).toBe(cost);
    const events = await t.eventsOf(customer);
    expect(
      events.map((event) => [event.event_id, event.metadata?.tokens, event.metadata?.estimated]),
    ).toEqual([
      [`${requestId}:input`, summary.promptTokens, undefined],
      [`${requestId}:output`, summary.completionTokens, undefined],
      [`${requestId}:1:input`, story.promptTokens, undefined],
      [`${requestId}:1:output`, story.completionTokens, undefined],
    ]);
  });

  it('reads a stream the handler abandons on to its usage, and bills that exactly, on its own', async () => {
    let seen = '';
    t.setHandler(async (_req, res) => {
      const stream = await t.openai.chat.completions.create({ ...LONG, stream: true });
      let chunks = 0;
      for await (const chunk of stream) {
        seen += chunk.choices[0]?.delta.content ?? '';
        if (++chunks === 4) break; // role chunk + 3 tokens
      }
      res.json({ partial: seen });
    });
    const customer = t.customerWithOneDollar();
    const requestId = randomUUID();
    const response = await t.post(customer, requestId);
    expect(response.status).toBe(200);
    expect(seen.split(' ')).toHaveLength(3);

    // The upstream is not cut: what it bills is the whole completion, and that is what is billed.
    await expect.poll(() => t.llm.requests().at(-1)?.completed).toBe(true);
    expect(t.llm.requests().at(-1)?.aborted).toBe(false);
    const whole = mockCompletion('chat', LONG);
    await expect
      .poll(() => t.spent(customer))
      .toBe(costOf('gpt-4o', whole.promptTokens, whole.completionTokens));
    const events = await t.eventsOf(customer);
    expect(
      events.map((event) => [event.event_id, event.metadata?.tokens, event.metadata?.estimated]),
    ).toEqual([
      [`${requestId}:call:0:input`, whole.promptTokens, undefined],
      [`${requestId}:call:0:output`, whole.completionTokens, undefined],
    ]);
  });

  it('bills the upstream’s own usage when the client leaves mid-answer and the handler reads on', async () => {
    let relayed = '';
    let handlerDone = false;
    t.setHandler(async (_req, res) => {
      const stream = await t.openai.chat.completions.create({ ...LONG, stream: true });
      res.setHeader('content-type', 'text/event-stream');
      for await (const chunk of stream) {
        const text = chunk.choices[0]?.delta.content ?? '';
        relayed += text;
        res.write(`data: ${JSON.stringify({ text })}\n\n`);
      }
      res.end();
      handlerDone = true;
    });
    const customer = t.customerWithOneDollar();
    const requestId = randomUUID();
    const leave = new AbortController();
    const response = await t.post(customer, requestId, { text: 'tell me' }, leave.signal);
    const reader = response.body!.getReader();
    let received = '';
    while ((received.match(/data:/g) ?? []).length < 5)
      received += new TextDecoder().decode((await reader.read()).value);
    leave.abort();

    await expect.poll(() => handlerDone).toBe(true);
    expect(t.llm.requests().at(-1)?.aborted).toBe(false);
    const whole = mockCompletion('chat', LONG);
    expect(relayed).toBe(whole.text);
    await expect.poll(async () => (await t.eventsOf(customer)).length).toBe(2);
    const events = await t.eventsOf(customer);
    expect(
      events.map((event) => [event.event_id, event.metadata?.tokens, event.metadata?.estimated]),
    ).toEqual([
      [`${requestId}:input`, whole.promptTokens, undefined],
      [`${requestId}:output`, whole.completionTokens, undefined],
    ]);
  });

  it("aborts the upstream when the caller's own signal aborts a stream, and bills an estimate", async () => {
    let seen = '';
    t.setHandler(async (_req, res) => {
      const mine = new AbortController();
      const stream = await t.openai.chat.completions.create(
        { ...LONG, stream: true },
        { signal: mine.signal },
      );
      for await (const chunk of stream) {
        seen += chunk.choices[0]?.delta.content ?? '';
        if (seen.length > 0) mine.abort();
      }
      res.json({ seen });
    });
    t.llm.reset();
    const customer = t.customerWithOneDollar();
    expect((await t.post(customer, randomUUID())).status).toBe(200);
    await expect.poll(() => t.llm.requests()[0]?.aborted).toBe(true);
    expect(seen.length).toBeGreaterThan(0);
    const events = await t.eventsOf(customer);
    // The input's bound, and one token per byte of what the upstream had sent when it was cut.
    const [input, output] = events.map((event) => Number(event.metadata?.tokens));
    expect(events.every((event) => event.metadata?.estimated === true)).toBe(true);
    expect(input).toBe(
      estimateInputTokens({ ...LONG, stream: true }, { estimateTokens: utf8ByteTokens, imageTokens: 1445 }),
    );
    expect(output).toBeGreaterThanOrEqual(Buffer.byteLength(seen));
    expect(output).toBeLessThanOrEqual(LONG.max_tokens);
  });

  it('answers while Dodo is down, and delivers the usage once Dodo is back', async () => {
    t.setHandler(async (_req, res) => {
      const first = await t.openai.chat.completions.create(SUMMARY);
      const stream = await t.openai.chat.completions.create({ ...STORY, stream: true });
      let story = '';
      for await (const chunk of stream) story += chunk.choices[0]?.delta.content ?? '';
      res.json({ summary: first.choices[0]?.message.content, story });
    });
    const customer = t.customerWithOneDollar();
    // A first request syncs the balance view; after it, Dodo goes down entirely.
    expect((await t.post(customer, randomUUID())).status).toBe(200);
    await t.app.billing.flush();
    const before = t.dodo.emulator.ingestedEvents({ customerId: customer }).length;
    t.dodo.emulator.fault('*', { status: 503 });

    const requestId = randomUUID();
    const started = performance.now();
    const response = await t.post(customer, requestId);
    expect(response.status).toBe(200);
    expect(performance.now() - started).toBeLessThan(1_000);
    expect(((await response.json()) as { story: string }).story).toBe(mockCompletion('chat', STORY).text);
    await expect
      .poll(async () => (await t.store.outboxStats()).waiting + (await t.store.outboxStats()).leased)
      .toBe(4);
    expect(t.dodo.emulator.ingestedEvents({ customerId: customer })).toHaveLength(before);

    t.dodo.emulator.clearFaults();
    await t.app.billing.flush();
    const delivered = t.dodo.emulator.ingestedEvents({ customerId: customer }).slice(before);
    const summary = mockCompletion('chat', SUMMARY);
    const story = mockCompletion('chat', STORY);
    expect(delivered.map((event) => [event.event_id, event.metadata?.tokens])).toEqual([
      [`${requestId}:input`, summary.promptTokens],
      [`${requestId}:output`, summary.completionTokens],
      [`${requestId}:1:input`, story.promptTokens],
      [`${requestId}:1:output`, story.completionTokens],
    ]);
    const perRequest =
      costOf('gpt-4o', summary.promptTokens, summary.completionTokens) +
      costOf('gpt-4o', story.promptTokens, story.completionTokens);
    expect(await t.spent(customer)).toBe(2n * perRequest);
  });

  it('bills nothing when the tracked call fails, even if the handler answers 200 without usage', async () => {
    t.llm.setFaults({ status: 500 });
    t.setHandler(async (_req, res) => {
      try {
        await t.openai.chat.completions.create(SUMMARY);
        res.json({ ok: true });
      } catch {
        res.json({ summary: null, fallback: 'try again later' });
      }
    });
    const customer = t.customerWithOneDollar();
    // A `prompt` field: automatic capture would bill it as an estimated input.
    const response = await t.post(customer, randomUUID(), { prompt: 'please summarize this long text' });
    expect(response.status).toBe(200);
    await expect.poll(async () => (await t.store.getBalance(customer))?.reserved).toBe(0n);
    expect(await t.spent(customer)).toBe(0n);
    expect(await t.eventsOf(customer)).toEqual([]);
  });

  it('bills a call that finishes after the response, on its own settlement, exactly once', async () => {
    let background: Promise<unknown> | undefined;
    t.setHandler(async (_req, res) => {
      const summary = await t.openai.chat.completions.create(SUMMARY);
      res.json({ summary: summary.choices[0]?.message.content });
      // Not awaited: it runs after the response has ended and the request was settled.
      background = new Promise((resolve) => res.once('close', resolve)).then(() =>
        t.openai.chat.completions.create(STORY),
      );
    });
    const customer = t.customerWithOneDollar();
    const requestId = randomUUID();
    expect((await t.post(customer, requestId)).status).toBe(200);
    await expect.poll(() => background).toBeDefined();
    await background;

    const summary = mockCompletion('chat', SUMMARY);
    const story = mockCompletion('chat', STORY);
    await expect
      .poll(() => t.spent(customer))
      .toBe(
        costOf('gpt-4o', summary.promptTokens, summary.completionTokens) +
          costOf('gpt-4o', story.promptTokens, story.completionTokens),
      );
    const events = await t.eventsOf(customer);
    expect(events.map((event) => [event.event_id, event.metadata?.tokens])).toEqual([
      [`${requestId}:input`, summary.promptTokens],
      [`${requestId}:output`, summary.completionTokens],
      [`${requestId}:call:1:input`, story.promptTokens],
      [`${requestId}:call:1:output`, story.completionTokens],
    ]);
  });
});
