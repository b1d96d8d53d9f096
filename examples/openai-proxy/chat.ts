import type { Request, RequestHandler, Response } from 'express';
import OpenAI from 'openai';
import type { ChatCompletionChunk, ChatCompletionCreateParams } from 'openai/resources/chat/completions';
import { RequestBilling } from '../../src/index.js';

type ErrorBody = { error: { message: string; type: string; param: string | null; code: string | null } };

function errorBody(message: string, type: string, code: string | null): ErrorBody {
  return { error: { message, type, param: null, code } };
}

/**
 * An upstream failure, as the client should see it: OpenAI's own errors pass through (a 400
 * about the request, a 429 with its `retry-after`), except the upstream refusing *our* key,
 * which is the proxy's problem (502), not the caller's.
 */
function upstreamFailure(error: unknown): {
  status: number;
  body: ErrorBody;
  headers: Record<string, string>;
} {
  if (error instanceof OpenAI.APIError && typeof error.status === 'number') {
    if (error.status === 401 || error.status === 403) {
      return {
        status: 502,
        body: errorBody(
          'The upstream LLM refused the proxy’s credentials.',
          'server_error',
          'upstream_auth_failed',
        ),
        headers: {},
      };
    }
    const retryAfter = error.headers?.get('retry-after');
    const upstream = error.error as ErrorBody['error'] | undefined;
    return {
      status: error.status,
      body: {
        error: {
          message: upstream?.message ?? error.message,
          type: upstream?.type ?? 'api_error',
          param: upstream?.param ?? null,
          code: upstream?.code ?? null,
        },
      },
      headers: retryAfter ? { 'retry-after': retryAfter } : {},
    };
  }
  return {
    status: 502,
    body: errorBody(
      `The upstream LLM could not be reached: ${(error as Error).message}`,
      'server_error',
      'upstream_unavailable',
    ),
    headers: {},
  };
}

/** Aborts the upstream call when the client goes away before its answer is complete. */
function abortOnDisconnect(res: Response): AbortController {
  const upstream = new AbortController();
  res.on('close', () => {
    if (!res.writableFinished) upstream.abort();
  });
  return upstream;
}

/**
 * `POST /v1/chat/completions`: forwards the (possibly soft-cap-rewritten) body to the upstream
 * with the `openai` SDK. JSON answers are returned as they are; streams are piped as SSE with
 * `stream_options.include_usage` forced on, so the usage chunk can be billed — it is passed
 * on only when the client asked for it, and recorded for billing otherwise.
 */
export function chatCompletions(openai: OpenAI): RequestHandler {
  return async function chatCompletionsHandler(req: Request, res: Response) {
    const body = req.body as ChatCompletionCreateParams;
    const upstream = abortOnDisconnect(res);
    try {
      if (body.stream !== true) {
        const completion = await openai.chat.completions.create(
          { ...body, stream: false },
          { signal: upstream.signal },
        );
        res.json(completion);
        return;
      }
      await pipeStream(openai, body, req, res, upstream);
    } catch (error) {
      if (upstream.signal.aborted) return; // the client left: nobody to answer
      const failure = upstreamFailure(error);
      if (res.headersSent) {
        // Mid-stream, OpenAI reports an error as an event; the stream then ends.
        res.end(`data: ${JSON.stringify(failure.body)}\n\n`);
        return;
      }
      res.set(failure.headers).status(failure.status).json(failure.body);
    }
  };
}

async function pipeStream(
  openai: OpenAI,
  body: ChatCompletionCreateParams,
  req: Request,
  res: Response,
  upstream: AbortController,
): Promise<void> {
  const clientWantsUsage = body.stream_options?.include_usage === true;
  const stream = await openai.chat.completions.create(
    { ...body, stream: true, stream_options: { ...body.stream_options, include_usage: true } },
    { signal: upstream.signal },
  );
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    connection: 'keep-alive',
  });
  for await (const chunk of stream) {
    if (chunk.usage && !clientWantsUsage) {
      recordUsage(res, req, chunk);
      if (chunk.choices.length === 0) continue;
      res.write(`data: ${JSON.stringify({ ...chunk, usage: undefined })}\n\n`);
      continue;
    }
    res.write(`data: ${JSON.stringify(chunk)}\n\n`);
  }
  res.end('data: [DONE]\n\n');
}

/** Bills a usage chunk the client did not ask to see (`meterUsage` would not find it in the stream). */
function recordUsage(res: Response, req: Request, chunk: ChatCompletionChunk): void {
  const billing: unknown = res.locals.billing;
  const usage = chunk.usage;
  if (!(billing instanceof RequestBilling) || !usage) return;
  const model = billing.model ?? (req.body as { model?: string }).model ?? chunk.model;
  billing.record({
    model,
    inputTokens: usage.prompt_tokens,
    outputTokens: usage.completion_tokens,
    cachedInputTokens: usage.prompt_tokens_details?.cached_tokens ?? 0,
    reasoningTokens: usage.completion_tokens_details?.reasoning_tokens ?? 0,
  });
}

/** `GET /v1/models`: the upstream's models that have a price here (others would be refused). */
export function listModels(openai: OpenAI, priced: ReadonlySet<string>): RequestHandler {
  return async function listModelsHandler(_req: Request, res: Response) {
    try {
      const data = [];
      for await (const model of openai.models.list()) if (priced.has(model.id)) data.push(model);
      res.json({ object: 'list', data });
    } catch (error) {
      const failure = upstreamFailure(error);
      res.set(failure.headers).status(failure.status).json(failure.body);
    }
  };
}
