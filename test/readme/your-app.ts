import type { Request, Response } from 'express';
import OpenAI from 'openai';

/**
 * What the README's quick start leaves to the app, as its test writes them: an API-key check
 * (keys registered by the test) and a proxy that forwards the request to an OpenAI-compatible
 * upstream through the `openai` client and answers what it answers.
 */
export const apiKeys = new Map<string, string>();

export function authenticate(req: Request, res: Response, next: () => void): void {
  const customerId = apiKeys.get(req.get('authorization')?.replace(/^Bearer /, '') ?? '');
  if (!customerId) {
    res.status(401).json({
      error: {
        message: 'Incorrect API key provided.',
        type: 'invalid_request_error',
        param: null,
        code: 'invalid_api_key',
      },
    });
    return;
  }
  res.locals.customerId = customerId;
  next();
}

const upstream = () =>
  new OpenAI({ apiKey: 'upstream-key', baseURL: process.env.UPSTREAM_BASE_URL, maxRetries: 0 });

export async function completions(req: Request, res: Response): Promise<void> {
  const body = req.body as OpenAI.ChatCompletionCreateParams;
  if (body.stream) {
    const stream = await upstream().chat.completions.create({ ...body, stream: true });
    res.setHeader('content-type', 'text/event-stream');
    for await (const chunk of stream) res.write(`data: ${JSON.stringify(chunk)}\n\n`);
    res.end('data: [DONE]\n\n');
    return;
  }
  res.json(await upstream().chat.completions.create({ ...body, stream: false }));
}
