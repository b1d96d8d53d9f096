import type { Request, RequestHandler, Response } from 'express';
import type OpenAI from 'openai';

/** The model `/v1/summarize` runs on, and is priced at before the call (by `requireCredits`). */
export const SUMMARY_MODEL = 'gpt-4o-mini';
export const SUMMARY_INSTRUCTIONS = 'Summarize the text in one short paragraph.';

/**
 * `POST /v1/summarize` with `{ "text": "…" }`: an endpoint of the app's own shape. It calls the
 * upstream through a client wrapped by `trackOpenAI`, post-processes, and answers its own JSON
 * (`{ summary, words }`) — no `usage` in it for `meterUsage` to read: the wrapped client
 * recorded the call's usage on the request as it returned.
 */
export function summarizeRoute(trackedOpenAI: OpenAI): RequestHandler {
  return async function summarizeHandler(req: Request, res: Response) {
    const text = (req.body as { text?: unknown } | undefined)?.text;
    if (typeof text !== 'string' || text.trim() === '') {
      res.status(400).json({
        error: {
          message: '`text` must be a non-empty string.',
          type: 'invalid_request_error',
          param: 'text',
          code: null,
        },
      });
      return;
    }
    try {
      const completion = await trackedOpenAI.chat.completions.create({
        model: SUMMARY_MODEL,
        messages: [
          { role: 'system', content: SUMMARY_INSTRUCTIONS },
          { role: 'user', content: text },
        ],
        max_tokens: 200,
      });
      const summary = completion.choices[0]?.message.content?.trim() ?? '';
      res.json({ summary, words: summary.split(/\s+/).filter(Boolean).length });
    } catch {
      res.status(502).json({
        error: {
          message: 'The upstream LLM failed.',
          type: 'server_error',
          param: null,
          code: 'upstream_failed',
        },
      });
    }
  };
}
