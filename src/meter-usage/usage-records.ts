import type { Response } from 'express';
import type { RequestBilling, UsageRecord } from '../billing-context.js';
import { priceOfModel } from '../estimate/index.js';
import { modelNameProblem } from '../request-settings.js';
import type { ResponseCapture } from './response-capture.js';
import { normalizeUsage, type ReportedUsage } from './usage.js';

function record(model: string, usage: ReportedUsage, estimated = false): UsageRecord {
  return estimated ? { model, ...usage, estimated: true } : { model, ...usage };
}

/** The visible text of a Chat Completions or Responses JSON body, for estimating its output. */
function generatedTextOfJson(body: unknown): string {
  const parts: string[] = [];
  const choices = (body as { choices?: { message?: { content?: unknown } }[] } | null)?.choices;
  if (Array.isArray(choices)) {
    for (const choice of choices) {
      const content = choice?.message?.content;
      if (typeof content === 'string') parts.push(content);
    }
  }
  const text = (body as { output_text?: unknown } | null)?.output_text;
  if (typeof text === 'string') parts.push(text);
  return parts.join('\n');
}

/**
 * Output tokens billed when the upstream's usage never arrived, so that cutting a response
 * cannot make it cheaper than it was: the generated text's estimate, and at least the whole
 * reserved output for a model that reasons (its reasoning never shows in the text) — never
 * more than the request's output limit, which the upstream cannot pass either.
 */
function estimatedOutput(billing: RequestBilling, model: string, generatedTokens: number): number {
  const estimate = billing.estimate;
  if (!estimate) return generatedTokens;
  const limit = estimate.output.choices * (billing.outputPerChoice ?? estimate.maxOutputPerChoice);
  const reasons = priceOfModel(billing.settings.pricing, model)?.reasoning === true;
  return reasons ? limit : Math.min(generatedTokens, limit);
}

/** A model name read from a response, when it can be billed under; else the request's. */
function modelOf(billing: RequestBilling, reported: unknown): string | undefined {
  if (billing.model !== undefined) return billing.model;
  return typeof reported === 'string' && modelNameProblem(reported) === undefined ? reported : undefined;
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
  const inputTokens = billing.estimate?.inputTokens ?? 0;
  const sse = capture.sse;
  if (sse) {
    const model = modelOf(billing, sse.model);
    if (model === undefined) return [];
    if (sse.usage) return [record(model, sse.usage)];
    if (failed && sse.generatedTokens === 0) return [];
    return [
      record(
        model,
        { inputTokens, outputTokens: estimatedOutput(billing, model, sse.generatedTokens) },
        true,
      ),
    ];
  }

  const reported = capture.reported;
  if (reported) {
    const model = modelOf(billing, reported.model);
    return model === undefined ? [] : [record(model, reported.usage)];
  }
  const body = capture.json();
  const model = modelOf(billing, (body as { model?: unknown } | undefined)?.model);
  if (model === undefined) return [];
  const usage = normalizeUsage((body as { usage?: unknown } | undefined)?.usage);
  if (usage) return [record(model, usage)];
  if (failed || !billing.reservation) return [];
  const generated = generatedTextOfJson(body);
  const generatedTokens = generated === '' ? 0 : billing.settings.estimateTokens(generated);
  return [
    record(model, { inputTokens, outputTokens: estimatedOutput(billing, model, generatedTokens) }, true),
  ];
}
