import type { Response } from 'express';

/** The body OpenAI answers errors with; the `openai` SDK maps it onto its error classes. */
export interface OpenAIErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

export function openAIError(message: string, type: string, code: string | null, param: string | null = null) {
  return { error: { message, type, param, code } } satisfies OpenAIErrorBody;
}

/** The code each response was refused with, for the metrics' `reason` (weak: gone with the response). */
const refusals = new WeakMap<Response, string>();

/** The code of the error this package answered `res` with, if it did. */
export function refusalOf(res: Response): string | undefined {
  return refusals.get(res);
}

/** Answers with an OpenAI-shaped error, unless the response has already started. */
export function sendOpenAIError(
  res: Response,
  status: number,
  body: OpenAIErrorBody,
  headers: Readonly<Record<string, string>> = {},
): void {
  if (res.headersSent) return;
  refusals.set(res, body.error.code ?? body.error.type);
  for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
  res.status(status).json(body);
}

/** The 401 of a request the app's authentication names no customer for. */
export function noCustomerError(): OpenAIErrorBody {
  return openAIError(
    'No customer is associated with this request. Authenticate with a valid API key.',
    'invalid_request_error',
    'invalid_api_key',
  );
}
