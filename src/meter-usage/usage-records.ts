import type { Response } from 'express';
import type { RequestBilling, UsageRecord } from '../billing-context.js';
import { tokensInCharacters } from '../require-credits/estimate.js';
import type { ResponseCapture } from './response-capture.js';
import { normalizeUsage, type ReportedUsage } from './usage.js';

function record(model: string, usage: ReportedUsage, estimated = false): UsageRecord {
  return estimated ? { model, ...usage, estimated: true } : { model, ...usage };
}

function generatedCharsOfJson(body: unknown): number {
  const choices = (body as { choices?: { message?: { content?: unknown } }[] } | null)?.choices;
  if (!Array.isArray(choices)) return 0;
  let chars = 0;
  for (const choice of choices) {
    const content = choice?.message?.content;
    if (typeof content === 'string') chars += content.length;
  }
  return chars;
}

/**
 * What the request is billed for: usage the app recorded; else the usage the response
 * reports (JSON `usage`, or an event stream's usage chunk); else, for an admitted request that
 * produced something, an estimate flagged `estimated` — a generation is never billed zero.
 * An error response without usage is billed nothing.
 */
export function usageRecordsOf(
  billing: RequestBilling,
  capture: ResponseCapture,
  res: Response,
): UsageRecord[] {
  const recorded = billing.recorded();
  if (recorded.length > 0) return [...recorded];

  const failed = res.statusCode >= 400;
  const sse = capture.sse;
  if (sse) {
    const model = billing.model ?? sse.model;
    if (model === undefined) return [];
    if (sse.usage) return [record(model, sse.usage)];
    if (failed && sse.generatedChars === 0) return [];
    return [
      record(
        model,
        { inputTokens: billing.estimatedInputTokens, outputTokens: tokensInCharacters(sse.generatedChars) },
        true,
      ),
    ];
  }

  const body = capture.json();
  const model = billing.model ?? (body as { model?: unknown } | undefined)?.model;
  if (typeof model !== 'string') return [];
  const usage = normalizeUsage((body as { usage?: unknown } | undefined)?.usage);
  if (usage) return [record(model, usage)];
  if (failed || !billing.reservation) return [];
  return [
    record(
      model,
      {
        inputTokens: billing.estimatedInputTokens,
        outputTokens: tokensInCharacters(generatedCharsOfJson(body)),
      },
      true,
    ),
  ];
}
