import OpenAI from 'openai';
import { createMockLLM, type MockLLM, type MockLLMOptions } from '../../src/testing/index.js';
import type { UpstreamConfig } from './config.js';

/** The upstream LLM the proxy forwards to, and what the startup banner says about it. */
export interface UpstreamPart {
  kind: 'mock' | 'real';
  openai: OpenAI;
  /** The mock LLM, when it is the upstream. */
  mockLLM: MockLLM | undefined;
  /** One line for the banner, without secrets. */
  description: string;
  close(): Promise<void>;
}

/** A real OpenAI-compatible upstream (`OPENAI_API_KEY`), or the mock LLM in this process. */
export async function openUpstream(
  config: UpstreamConfig | undefined,
  mockOptions: MockLLMOptions | undefined,
): Promise<UpstreamPart> {
  if (config) {
    // The base URL is always passed: the client would otherwise read OPENAI_BASE_URL itself.
    const openai = new OpenAI({
      apiKey: config.apiKey,
      baseURL: config.baseURL ?? 'https://api.openai.com/v1',
    });
    return {
      kind: 'real',
      openai,
      mockLLM: undefined,
      description: `${openai.baseURL} (OPENAI_API_KEY${config.baseURL ? ' and OPENAI_BASE_URL' : ''})`,
      close: async () => {},
    };
  }
  const mockLLM = await createMockLLM(mockOptions);
  return {
    kind: 'mock',
    openai: new OpenAI({ apiKey: 'sk-mock-llm', baseURL: mockLLM.baseURL }),
    mockLLM,
    description: 'the mock LLM in this process, deterministic replies (set OPENAI_API_KEY for OpenAI)',
    close: () => mockLLM.close(),
  };
}
