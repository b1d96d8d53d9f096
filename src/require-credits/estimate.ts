/** Counts the tokens of a text; the default is OpenAI's rule of thumb of four characters a token. */
export type TokenEstimator = (text: string) => number;

/** Tokens in `chars` characters of text, by the rule of four characters a token. */
export const tokensInCharacters = (chars: number): number => Math.ceil(chars / 4);

export const charactersOverFour: TokenEstimator = (text) => tokensInCharacters(text.length);

/** The prompt text of an OpenAI-shaped request body (Chat Completions, Responses, Completions). */
export function promptText(body: unknown): string {
  if (body === null || typeof body !== 'object') return '';
  const request = body as Record<string, unknown>;
  const parts: string[] = [];
  collectText(request.messages, parts);
  collectText(request.input, parts);
  collectText(request.prompt, parts);
  collectText(request.instructions, parts);
  collectText(request.system, parts);
  return parts.join('\n');
}

function collectText(value: unknown, parts: string[]): void {
  if (typeof value === 'string') {
    parts.push(value);
  } else if (Array.isArray(value)) {
    for (const item of value) collectText(item, parts);
  } else if (value !== null && typeof value === 'object') {
    const item = value as Record<string, unknown>;
    // Message `content` (string or parts), content parts' `text`, tool call `arguments`.
    collectText(item.content, parts);
    collectText(item.text, parts);
    collectText(item.arguments, parts);
  }
}

/** The output allowance the request itself sets, if any. */
export function requestedMaxOutputTokens(body: unknown): number | undefined {
  if (body === null || typeof body !== 'object') return undefined;
  const request = body as Record<string, unknown>;
  for (const field of ['max_completion_tokens', 'max_output_tokens', 'max_tokens']) {
    const value = request[field];
    if (typeof value === 'number' && Number.isSafeInteger(value) && value > 0) return value;
  }
  return undefined;
}
