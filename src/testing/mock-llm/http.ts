import type { IncomingMessage, ServerResponse } from 'node:http';

/** OpenAI's error envelope: `{ error: { message, type, param, code } }`. */
export interface OpenAIErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

export function openAIError(
  message: string,
  type: string,
  code: string | null = null,
  param: string | null = null,
): OpenAIErrorBody {
  return { error: { message, type, param, code } };
}

/** The bodies OpenAI answers with for these statuses, so clients see what production sends. */
export function defaultErrorFor(status: number): OpenAIErrorBody {
  switch (status) {
    case 429:
      return openAIError(
        'Rate limit reached for requests. Please try again later.',
        'requests',
        'rate_limit_exceeded',
      );
    case 500:
      return openAIError(
        'The server had an error while processing your request. Sorry about that!',
        'server_error',
      );
    case 502:
      return openAIError('Bad gateway.', 'server_error', 'bad_gateway');
    case 503:
      return openAIError(
        'The engine is currently overloaded, please try again later.',
        'server_error',
        'service_unavailable',
      );
    default:
      return openAIError(`The mock LLM answered HTTP ${status} as configured.`, 'server_error');
  }
}

export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Readonly<Record<string, string>> = {},
): void {
  const payload = JSON.stringify(body);
  res.writeHead(status, {
    ...headers,
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(payload),
  });
  res.end(payload);
}

/** The body was not JSON, or was too large: answered as OpenAI does (400 / 413). */
export class BodyError extends Error {
  constructor(
    readonly status: number,
    readonly body: OpenAIErrorBody,
  ) {
    super(body.error.message);
  }
}

/** Reads and parses a JSON body; an empty body is `undefined`. */
export async function readJsonBody(req: IncomingMessage, limitBytes: number): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limitBytes) {
      throw new BodyError(
        413,
        openAIError(`Request body too large: over ${limitBytes} bytes.`, 'invalid_request_error'),
      );
    }
    chunks.push(chunk);
  }
  if (size === 0) return undefined;
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new BodyError(
      400,
      openAIError(
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
        'invalid_request_error',
      ),
    );
  }
}
