/**
 * The mock LLM's deterministic "tokenizer" and reply rule. Tests elsewhere compute expected
 * usage and costs with these same functions, so what the mock bills is never a guess.
 *
 * The rule, in full:
 * - A token is a maximal run of non-whitespace characters: `countTokens('Hello, world!') === 2`.
 * - `prompt_tokens` is the number of tokens in every text of the request, in order: for Chat
 *   Completions each message's `content` (a string, or the `text` of its parts); for the
 *   Responses API the `instructions`, then the `input` (a string, or each item's `content`
 *   string or parts' `text`, or a tool output's `output`). Images, audio and tool definitions
 *   count 0. There is no per-message overhead.
 * - The natural reply is the words `Mock reply:` followed by the prompt's tokens, so it is
 *   `prompt_tokens + 2` tokens long (the `reply` option replaces this text).
 * - The cap is `max_completion_tokens ?? max_tokens` (Chat) or `max_output_tokens` (Responses),
 *   else `defaultMaxTokens` (1024).
 * - `reasoning_tokens = min(reasoningTokens, cap)` and they are part of `completion_tokens`, as
 *   OpenAI counts them; the visible reply is cut to the rest of the cap.
 *   `completion_tokens = reasoning_tokens + visible tokens`.
 * - `cached_tokens = min(cachedTokens, prompt_tokens)`, part of `prompt_tokens`.
 * - `finish_reason` is `length` when the visible reply was cut by the cap, else `stop`.
 */

/** A token count, or a function of the request that returns one. */
export type TokenSetting = number | ((request: TokenSettingContext) => number);

/** What a {@link TokenSetting} function is told about the request. */
export interface TokenSettingContext {
  /** `chat` for `/v1/chat/completions`, `responses` for `/v1/responses`. */
  endpoint: MockEndpoint;
  model: string;
  promptTokens: number;
}

export type MockEndpoint = 'chat' | 'responses';

/** The settings that shape a completion; the same fields as in `MockLLMOptions`. */
export interface MockCompletionSettings {
  /**
   * Completion cap when the request sets none.
   * @default 1024
   */
  defaultMaxTokens?: number;
  /**
   * `prompt_tokens_details.cached_tokens` (Responses: `input_tokens_details.cached_tokens`),
   * clamped to the prompt's size.
   * @default 0
   */
  cachedTokens?: TokenSetting;
  /**
   * `completion_tokens_details.reasoning_tokens` (Responses: `output_tokens_details`), counted
   * inside the completion and clamped to the cap.
   * @default 0
   */
  reasoningTokens?: TokenSetting;
  /**
   * Replaces the reply text (before the cap), given the prompt's text (its tokens joined by
   * single spaces). Its whitespace is normalized to single spaces, so the reply's token count
   * always equals `countTokens` of the text sent.
   * @default `Mock reply: ${prompt}`
   */
  reply?: string | ((prompt: string) => string);
  /**
   * Count the prompt as OpenAI bills it: every text anywhere in the request — messages, tool
   * definitions, earlier tool calls' arguments, `response_format` schemas — plus 3 tokens per
   * message, instead of the message texts alone.
   * @default false
   */
  wholeRequestPrompt?: boolean;
  /**
   * A model's output ceiling when a request sets no limit (OpenAI's default is the model's
   * maximum: 16,384 for gpt-4o, 100,000 for o1), before `defaultMaxTokens`.
   * @default {}
   */
  maxOutputTokens?: Readonly<Record<string, number>>;
  /** Generate up to the cap: the reply repeats until it fills the output limit. @default false */
  fillToCap?: boolean;
}

/** What the mock answers for one request: the text and the usage it reports. */
export interface MockCompletion {
  /** The visible reply, after the cap. `countTokens(text) === completionTokens - reasoningTokens`. */
  text: string;
  /** The visible reply's tokens, in order (what a stream sends, one per chunk). */
  tokens: string[];
  promptTokens: number;
  cachedTokens: number;
  completionTokens: number;
  reasoningTokens: number;
  totalTokens: number;
  finishReason: 'stop' | 'length';
  /** Completions generated (`n`); `completionTokens` counts all of them, each one `tokens`. */
  choices: number;
}

/** Default completion cap when neither the request nor the options set one. */
export const DEFAULT_MAX_TOKENS = 1024;

const TOKEN = /\S+/g;

function tokensOf(text: string): string[] {
  return text.match(TOKEN) ?? [];
}

/**
 * Counts tokens the way the mock LLM does: a token is a maximal run of non-whitespace
 * characters.
 * @example countTokens('Say hello  to\nme') // 4
 */
export function countTokens(text: string): number {
  return tokensOf(text).length;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
}

/** Texts of a message `content` (or Responses item): a string, or the `text` of each part. */
function contentTexts(content: unknown): string[] {
  if (typeof content === 'string') return [content];
  if (!Array.isArray(content)) return [];
  return content.flatMap((part) => (isRecord(part) && typeof part.text === 'string' ? [part.text] : []));
}

/** Every text of a Chat Completions request that counts as prompt, in order. */
export function chatPromptTexts(messages: unknown): string[] {
  if (!Array.isArray(messages)) return [];
  return messages.flatMap((message) => (isRecord(message) ? contentTexts(message.content) : []));
}

/** Every text of a Responses API request that counts as prompt, in order. */
export function responsesPromptTexts(body: { instructions?: unknown; input?: unknown }): string[] {
  const texts = typeof body.instructions === 'string' ? [body.instructions] : [];
  if (typeof body.input === 'string') return [...texts, body.input];
  if (!Array.isArray(body.input)) return texts;
  for (const item of body.input) {
    if (!isRecord(item)) continue;
    texts.push(...contentTexts(item.content));
    if (typeof item.output === 'string') texts.push(item.output);
  }
  return texts;
}

/** The request fields the completion depends on (a parsed request body is fine). */
export interface MockCompletionRequest {
  model?: unknown;
  messages?: unknown;
  instructions?: unknown;
  input?: unknown;
  max_tokens?: unknown;
  max_completion_tokens?: unknown;
  max_output_tokens?: unknown;
  n?: unknown;
}

function requestCap(endpoint: MockEndpoint, request: MockCompletionRequest): number | undefined {
  const candidates =
    endpoint === 'chat' ? [request.max_completion_tokens, request.max_tokens] : [request.max_output_tokens];
  const cap = candidates.find((value) => value !== undefined && value !== null);
  return typeof cap === 'number' ? cap : undefined;
}

function resolveSetting(setting: TokenSetting | undefined, context: TokenSettingContext): number {
  const value = typeof setting === 'function' ? setting(context) : (setting ?? 0);
  return Number.isFinite(value) && value > 0 ? Math.floor(value) : 0;
}

/**
 * Computes what the mock LLM answers to a request: its reply text and its usage, by the rule
 * documented at the top of this module. The server calls exactly this, so a test can predict
 * the usage (and so the cost) of any request.
 * @example
 * const { promptTokens, completionTokens } = mockCompletion('chat', {
 *   model: 'gpt-4o',
 *   messages: [{ role: 'user', content: 'one two three' }],
 *   max_tokens: 4,
 * }); // promptTokens 3, completionTokens 4 (finishReason 'length')
 */
export function mockCompletion(
  endpoint: MockEndpoint,
  request: MockCompletionRequest,
  settings: MockCompletionSettings = {},
): MockCompletion {
  const promptWords = (
    endpoint === 'chat' ? chatPromptTexts(request.messages) : responsesPromptTexts(request)
  ).flatMap(tokensOf);
  const promptTokens = settings.wholeRequestPrompt ? wholeRequestTokens(request) : promptWords.length;
  const promptText = promptWords.join(' ');
  const context: TokenSettingContext = {
    endpoint,
    model: typeof request.model === 'string' ? request.model : '',
    promptTokens,
  };

  const replyText =
    typeof settings.reply === 'function'
      ? settings.reply(promptText)
      : (settings.reply ?? `Mock reply: ${promptText}`);
  const model = typeof request.model === 'string' ? request.model : '';
  const cap = Math.max(
    0,
    requestCap(endpoint, request) ??
      settings.maxOutputTokens?.[model] ??
      settings.defaultMaxTokens ??
      DEFAULT_MAX_TOKENS,
  );
  const natural = settings.fillToCap ? repeatTo(tokensOf(replyText), cap) : tokensOf(replyText);
  const reasoningTokens = Math.min(resolveSetting(settings.reasoningTokens, context), cap);
  const tokens = natural.slice(0, cap - reasoningTokens);
  const cachedTokens = Math.min(resolveSetting(settings.cachedTokens, context), promptTokens);
  const choices =
    endpoint === 'chat' && typeof request.n === 'number' && request.n > 1 ? Math.floor(request.n) : 1;
  const completionTokens = choices * (reasoningTokens + tokens.length);

  return {
    text: tokens.join(' '),
    tokens,
    promptTokens,
    cachedTokens,
    completionTokens,
    reasoningTokens: choices * reasoningTokens,
    totalTokens: promptTokens + completionTokens,
    finishReason:
      tokens.length < natural.length || (settings.fillToCap && tokens.length > 0) ? 'length' : 'stop',
    choices,
  };
}

/** `words` repeated until there are `count` of them (none when there is nothing to repeat). */
function repeatTo(words: string[], count: number): string[] {
  if (words.length === 0) return [];
  return Array.from({ length: count }, (_, index) => words[index % words.length]!);
}

/**
 * The prompt as OpenAI bills it: the tokens of every string in the request except its model and
 * control fields (tool definitions, tool-call arguments and schemas included), and 3 per message.
 */
function wholeRequestTokens(request: MockCompletionRequest): number {
  let tokens = Array.isArray(request.messages) ? 3 * request.messages.length : 0;
  const stack: unknown[] = Object.entries(request)
    .filter(([key]) => key !== 'model')
    .map(([, value]) => value);
  while (stack.length > 0) {
    const value = stack.pop();
    if (typeof value === 'string') tokens += countTokens(value);
    else if (Array.isArray(value)) stack.push(...value);
    else if (isRecord(value)) stack.push(...Object.values(value));
  }
  return tokens;
}
