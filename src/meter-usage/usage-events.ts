import type { UsageRecord } from '../billing-context.js';
import type { ResolvedMetering } from '../metering.js';
import type { OutboxEvent } from '../store/types.js';

/**
 * A meter value as event metadata: a JSON number while it is exact as one, a decimal string
 * beyond (Dodo reads both; a float would silently round the sum).
 */
function meterValue(value: bigint): number | string {
  return value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value.toString();
}

/**
 * The two usage events (input, output) of each record, as the seed sends them:
 * `{ event_id, customer_id, event_name, timestamp, metadata: { model, tokens } }`. Event ids are
 * deterministic per request, record and kind, so a retried ingest never bills twice.
 *
 * Under weighted meters `tokens` is the real count times the model's integer weight
 * (`price / base`), exact with no remainder, and the real count and the weight ride along as
 * `raw_tokens` and `weight`.
 */
export function usageEvents(
  billing: { customerId: string; requestId: string },
  records: readonly UsageRecord[],
  metering: ResolvedMetering,
  timestamp: string,
): OutboxEvent[] {
  const events: OutboxEvent[] = [];
  records.forEach((usage, index) => {
    const meter = metering.forModel(usage.model);
    const idBase = index === 0 ? billing.requestId : `${billing.requestId}:${index}`;
    const common: OutboxEvent['metadata'] = { model: usage.model, request_id: billing.requestId };
    if (usage.estimated) common.estimated = true;
    const push = (
      kind: 'input' | 'output',
      count: number,
      weight: bigint,
      detail: ['cached_tokens' | 'reasoning_tokens', number | undefined],
    ) => {
      if (count <= 0) return;
      const metadata: OutboxEvent['metadata'] = meter.weighted
        ? {
            ...common,
            tokens: meterValue(BigInt(count) * weight),
            raw_tokens: count,
            weight: meterValue(weight),
          }
        : { ...common, tokens: count };
      const [detailKey, detailValue] = detail;
      if (detailValue) metadata[detailKey] = detailValue;
      events.push({
        event_id: `${idBase}:${kind}`,
        customer_id: billing.customerId,
        event_name: meter[kind],
        timestamp,
        metadata,
      });
    };
    push('input', usage.inputTokens, meter.inputWeight, ['cached_tokens', usage.cachedInputTokens]);
    push('output', usage.outputTokens, meter.outputWeight, ['reasoning_tokens', usage.reasoningTokens]);
  });
  return events;
}
