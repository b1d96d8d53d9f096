import type { RequestBilling, UsageRecord } from '../billing-context.js';
import type { MeterNames } from '../options.js';
import type { OutboxEvent } from '../store/types.js';

/**
 * The two usage events (input, output) of each record, as the seed sends them:
 * `{ event_id, customer_id, event_name, timestamp, metadata: { model, tokens } }`. Event ids are
 * deterministic per request, record and kind, so a retried ingest never bills twice.
 */
export function usageEvents(
  billing: RequestBilling,
  records: readonly UsageRecord[],
  meters: (model: string) => MeterNames,
  timestamp: string,
): OutboxEvent[] {
  const events: OutboxEvent[] = [];
  records.forEach((usage, index) => {
    const names = meters(usage.model);
    const idBase = index === 0 ? billing.requestId : `${billing.requestId}:${index}`;
    const common: OutboxEvent['metadata'] = { model: usage.model, request_id: billing.requestId };
    if (usage.estimated) common.estimated = true;
    if (usage.inputTokens > 0) {
      const metadata: OutboxEvent['metadata'] = { ...common, tokens: usage.inputTokens };
      if (usage.cachedInputTokens) metadata.cached_tokens = usage.cachedInputTokens;
      events.push({
        event_id: `${idBase}:input`,
        customer_id: billing.customerId,
        event_name: names.input,
        timestamp,
        metadata,
      });
    }
    if (usage.outputTokens > 0) {
      const metadata: OutboxEvent['metadata'] = { ...common, tokens: usage.outputTokens };
      if (usage.reasoningTokens) metadata.reasoning_tokens = usage.reasoningTokens;
      events.push({
        event_id: `${idBase}:output`,
        customer_id: billing.customerId,
        event_name: names.output,
        timestamp,
        metadata,
      });
    }
  });
  return events;
}
