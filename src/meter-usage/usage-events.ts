import type { UsageRecord } from '../billing-context.js';
import type { MeterNames, ModelMetering, ResolvedMetering } from '../metering.js';
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
  metering: ResolvedMetering | ((model: string) => MeterNames),
  timestamp: string,
): OutboxEvent[] {
  const meterOf = (model: string): ModelMetering =>
    'forModel' in metering
      ? metering.forModel(model)
      : { ...metering(model), inputWeight: 1n, outputWeight: 1n, weighted: false };
  const events: OutboxEvent[] = [];
  records.forEach((usage, index) => {
    const meter = meterOf(usage.model);
    const idBase = index === 0 ? billing.requestId : `${billing.requestId}:${index}`;
    const common: OutboxEvent['metadata'] = { model: usage.model, request_id: billing.requestId };
    if (usage.estimated) common.estimated = true;
    const tokens = (count: number, weight: bigint): OutboxEvent['metadata'] =>
      meter.weighted
        ? {
            ...common,
            tokens: meterValue(BigInt(count) * weight),
            raw_tokens: count,
            weight: meterValue(weight),
          }
        : { ...common, tokens: count };
    if (usage.inputTokens > 0) {
      const metadata = tokens(usage.inputTokens, meter.inputWeight);
      if (usage.cachedInputTokens) metadata.cached_tokens = usage.cachedInputTokens;
      events.push({
        event_id: `${idBase}:input`,
        customer_id: billing.customerId,
        event_name: meter.input,
        timestamp,
        metadata,
      });
    }
    if (usage.outputTokens > 0) {
      const metadata = tokens(usage.outputTokens, meter.outputWeight);
      if (usage.reasoningTokens) metadata.reasoning_tokens = usage.reasoningTokens;
      events.push({
        event_id: `${idBase}:output`,
        customer_id: billing.customerId,
        event_name: meter.output,
        timestamp,
        metadata,
      });
    }
  });
  return events;
}
