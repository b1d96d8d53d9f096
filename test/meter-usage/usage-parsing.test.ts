import { describe, expect, it } from 'vitest';
import { utf8ByteTokens } from '../../src/estimate/index.js';
import { SseUsageParser } from '../../src/meter-usage/sse-usage-parser.js';
import { normalizeUsage } from '../../src/meter-usage/usage.js';

const sse = (events: unknown[]) =>
  `${events.map((event) => `data: ${JSON.stringify(event)}\n\n`).join('')}data: [DONE]\n\n`;

describe('normalizeUsage', () => {
  it('reads Chat Completions usage with cached and reasoning tokens', () => {
    expect(
      normalizeUsage({
        prompt_tokens: 120,
        completion_tokens: 80,
        total_tokens: 200,
        prompt_tokens_details: { cached_tokens: 64 },
        completion_tokens_details: { reasoning_tokens: 30 },
      }),
    ).toEqual({ inputTokens: 120, outputTokens: 80, cachedInputTokens: 64, reasoningTokens: 30 });
  });

  it('reads Responses API usage', () => {
    expect(
      normalizeUsage({
        input_tokens: 10,
        output_tokens: 5,
        input_tokens_details: { cached_tokens: 2 },
        output_tokens_details: { reasoning_tokens: 1 },
      }),
    ).toEqual({ inputTokens: 10, outputTokens: 5, cachedInputTokens: 2, reasoningTokens: 1 });
  });

  it('adds Anthropic cache reads and writes back into the input it bills', () => {
    expect(
      normalizeUsage({
        input_tokens: 10,
        output_tokens: 5,
        cache_read_input_tokens: 100,
        cache_creation_input_tokens: 7,
      }),
    ).toEqual({ inputTokens: 117, outputTokens: 5, cachedInputTokens: 100 });
  });

  it('refuses what is not usage', () => {
    expect(normalizeUsage(null)).toBeUndefined();
    expect(normalizeUsage({ total_tokens: 3 })).toBeUndefined();
    expect(normalizeUsage({ prompt_tokens: -1, completion_tokens: 'x' })).toBeUndefined();
  });
});

describe('SseUsageParser', () => {
  const chat = sse([
    {
      id: 'c1',
      object: 'chat.completion.chunk',
      model: 'gpt-4o',
      choices: [{ index: 0, delta: { role: 'assistant', content: '' } }],
      usage: null,
    },
    {
      id: 'c1',
      object: 'chat.completion.chunk',
      model: 'gpt-4o',
      choices: [{ index: 0, delta: { content: 'Hello ' } }],
      usage: null,
    },
    {
      id: 'c1',
      object: 'chat.completion.chunk',
      model: 'gpt-4o',
      choices: [{ index: 0, delta: { content: 'wörld' } }],
      usage: null,
    },
    {
      id: 'c1',
      object: 'chat.completion.chunk',
      model: 'gpt-4o',
      choices: [{ index: 0, delta: {}, finish_reason: 'stop' }],
      usage: null,
    },
    {
      id: 'c1',
      object: 'chat.completion.chunk',
      model: 'gpt-4o',
      choices: [],
      usage: { prompt_tokens: 9, completion_tokens: 3, total_tokens: 12 },
    },
  ]);

  it('finds the usage chunk after the finish chunk, whatever the chunk boundaries', () => {
    const bytes = Buffer.from(chat, 'utf8');
    for (const size of [1, 2, 3, 7, 64, bytes.length]) {
      const parser = new SseUsageParser(utf8ByteTokens);
      for (let offset = 0; offset < bytes.length; offset += size)
        parser.push(bytes.subarray(offset, offset + size));
      expect(parser.usage).toEqual({ inputTokens: 9, outputTokens: 3 });
      expect(parser.model).toBe('gpt-4o');
      expect(parser.generatedTokens).toBe(Buffer.byteLength('Hello wörld'));
    }
  });

  it('counts generated text of a stream cut before its usage', () => {
    const parser = new SseUsageParser(utf8ByteTokens);
    parser.push(chat.slice(0, chat.indexOf('"finish_reason"')));
    expect(parser.usage).toBeUndefined();
    expect(parser.generatedTokens).toBe(Buffer.byteLength('Hello wörld'));
  });

  it("reads the Responses API's response.completed", () => {
    const parser = new SseUsageParser(utf8ByteTokens);
    parser.push(
      sse([
        { type: 'response.output_text.delta', delta: 'abcd' },
        {
          type: 'response.completed',
          response: { model: 'o1', usage: { input_tokens: 4, output_tokens: 1 } },
        },
      ]),
    );
    expect(parser.usage).toEqual({ inputTokens: 4, outputTokens: 1 });
    expect(parser.model).toBe('o1');
    expect(parser.generatedTokens).toBe(4);
  });

  it("combines Anthropic's message_start input with message_delta output", () => {
    const parser = new SseUsageParser(utf8ByteTokens);
    parser.push(
      'event: message_start\n' +
        `data: ${JSON.stringify({ type: 'message_start', message: { model: 'claude', usage: { input_tokens: 20, output_tokens: 1, cache_read_input_tokens: 5 } } })}\r\n\r\n` +
        `data: ${JSON.stringify({ type: 'content_block_delta', delta: { type: 'text_delta', text: 'hi' } })}\n\n` +
        `data: ${JSON.stringify({ type: 'message_delta', usage: { output_tokens: 42 } })}\n\n`,
    );
    expect(parser.usage).toEqual({ inputTokens: 25, outputTokens: 42, cachedInputTokens: 5 });
    expect(parser.generatedTokens).toBe(2);
  });

  it('ignores comments, other fields and malformed data', () => {
    const parser = new SseUsageParser(utf8ByteTokens);
    parser.push(
      ': keep-alive\n\nevent: x\nid: 1\ndata: {not json\n\ndata:{"usage":{"prompt_tokens":1,"completion_tokens":2}}\n\n',
    );
    expect(parser.usage).toEqual({ inputTokens: 1, outputTokens: 2 });
  });
});
