import DodoPayments from 'dodopayments';
import { describe, expect, it } from 'vitest';
import { createBilling, MemoryStore, weightedMeters } from '../../src/index.js';
import type { Logger } from '../../src/logger.js';

/** A pricing table whose models cost differently: one meter rate cannot bill both. */
const pricing = {
  'gpt-4o': { input: '2.50', output: '10.00' },
  'gpt-4o-mini': { input: '0.15', output: '0.60' },
};

function recordingLogger() {
  const warnings: string[] = [];
  const logger: Logger = { warn: (message) => warnings.push(message), error: () => {} };
  return { logger, warnings };
}

describe('meters left at their default', () => {
  // No request is sent: the client only has to exist.
  const dodo = new DodoPayments({ bearerToken: 'unused', baseURL: 'http://127.0.0.1:9' });

  it('warns once, with the fix, when the default meters would bill differently priced models at one rate', async () => {
    const { logger, warnings } = recordingLogger();
    const billing = createBilling({
      store: new MemoryStore(),
      dodo,
      customerId: () => 'cus_1',
      creditEntitlementId: 'cde_1',
      pricing,
      logger,
    });
    billing.meterUsage();
    billing.meterUsage();
    billing.chain();
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('weightedMeters()');
    expect(warnings[0]).toContain('different prices');
    await billing.close();
  });

  it('stays quiet with a strategy, or when every model costs the same', async () => {
    const { logger, warnings } = recordingLogger();
    const weighted = createBilling({
      store: new MemoryStore(),
      dodo,
      customerId: () => 'cus_1',
      creditEntitlementId: 'cde_1',
      pricing,
      meters: weightedMeters(),
      logger,
    });
    weighted.chain();
    const samePrice = createBilling({
      store: new MemoryStore(),
      dodo,
      customerId: () => 'cus_1',
      creditEntitlementId: 'cde_1',
      pricing: { a: pricing['gpt-4o'], b: pricing['gpt-4o'] },
      logger,
    });
    samePrice.chain();
    expect(warnings).toEqual([]);
    await weighted.close();
    await samePrice.close();
  });
});
