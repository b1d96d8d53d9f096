import { type DodoPayments, NotFoundError, UnprocessableEntityError } from 'dodopayments';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseCredits } from '../../src/money.js';
import { createDodoEmulator, type DodoEmulator } from '../../src/testing/index.js';

const NOW = Date.parse('2026-03-01T12:00:00Z');

describe('Dodo emulator: usage events and meters', () => {
  let dodo: DodoEmulator;
  let client: DodoPayments;
  let entitlementId: string;
  let customerId: string;
  let clock: number;

  beforeEach(async () => {
    clock = NOW;
    dodo = await createDodoEmulator({ now: () => clock, meterDelayMs: 20, balanceLowThreshold: '100' });
    client = dodo.client({ maxRetries: 0 });
    entitlementId = dodo.createCreditEntitlement({ precision: 2 }).id;
    customerId = dodo.createCustomer({ email: 'ada@example.com' }).customer_id;
  });
  afterEach(() => dodo.close());

  const event = (id: string, extra: Record<string, unknown> = {}) => ({
    event_id: id,
    customer_id: customerId,
    event_name: 'llm.input_tokens',
    metadata: { model: 'gpt-4o', tokens: 1000 },
    ...extra,
  });

  it('ingests idempotently: repeated ids are ignored, the count says how many were new', async () => {
    expect(await client.usageEvents.ingest({ events: [event('e1'), event('e2')] })).toEqual({
      ingested_count: 2,
    });
    expect(await client.usageEvents.ingest({ events: [event('e2'), event('e3')] })).toEqual({
      ingested_count: 1,
    });
    expect(dodo.ingestedEvents().map((stored) => stored.event_id)).toEqual(['e1', 'e2', 'e3']);
    expect(await client.usageEvents.retrieve('e1')).toMatchObject({
      customer_id: customerId,
      timestamp: new Date(NOW).toISOString(),
    });
    await expect(client.usageEvents.retrieve('missing')).rejects.toBeInstanceOf(NotFoundError);
  });

  it("rejects a whole request that breaks one of Dodo's ingest rules with 422", async () => {
    const rejected = async (events: unknown[]) => {
      const error = await client.usageEvents.ingest({ events: events as DodoPayments.EventInput[] }).then(
        () => undefined,
        (caught: unknown) => caught,
      );
      expect(error).toBeInstanceOf(UnprocessableEntityError);
      return (error as UnprocessableEntityError).message;
    };
    expect(await rejected([event('d1'), event('ok'), event('d1')])).toMatch(/appears more than once/);
    expect(await rejected([])).toMatch(/between 1 and 1000/);
    expect(await rejected(Array.from({ length: 1001 }, (_, i) => event(`bulk-${i}`)))).toMatch(
      /between 1 and 1000/,
    );
    const at = (ms: number) => new Date(ms).toISOString();
    expect(await rejected([event('old', { timestamp: at(NOW - 60 * 60 * 1000 - 1) })])).toMatch(
      /more than 1 hour old/,
    );
    expect(await rejected([event('ahead', { timestamp: at(NOW + 5 * 60 * 1000 + 1) })])).toMatch(
      /5 minutes in the future/,
    );
    const tooMany = Object.fromEntries(Array.from({ length: 51 }, (_, i) => [`k${i}`, i]));
    expect(await rejected([event('m1', { metadata: tooMany })])).toMatch(/at most 50/);
    expect(await rejected([event('m2', { metadata: { ['k'.repeat(101)]: 1 } })])).toMatch(/longer than 100/);
    expect(await rejected([event('m3', { metadata: { note: 'x'.repeat(501) } })])).toMatch(/longer than 500/);
    expect(await rejected([event('m4', { metadata: { nested: { a: 1 } } })])).toMatch(/objects and arrays/);
    expect(await rejected([event('c1', { customer_id: 'cus_nobody' })])).toMatch(/not a customer/);
    expect(dodo.ingestedEvents()).toEqual([]);

    // The edges of the window are accepted; 1000 events are accepted; 50 keys, 100/500 chars are accepted.
    const edge = [
      event('edge-old', { timestamp: at(NOW - 60 * 60 * 1000) }),
      event('edge-new', { timestamp: at(NOW + 5 * 60 * 1000) }),
      event('edge-meta', {
        metadata: {
          ...Object.fromEntries(Array.from({ length: 48 }, (_, i) => [`k${i}`, true])),
          ['k'.repeat(100)]: 'v'.repeat(500),
          tokens: 1,
        },
      }),
    ];
    expect(await client.usageEvents.ingest({ events: edge })).toEqual({ ingested_count: 3 });
    const thousand = Array.from({ length: 1000 }, (_, i) => event(`t-${i}`));
    expect(await client.usageEvents.ingest({ events: thousand })).toEqual({ ingested_count: 1000 });
  });

  it('lists events with customer, name, meter and time filters', async () => {
    const other = dodo.createCustomer({ email: 'bob@example.com' }).customer_id;
    await client.usageEvents.ingest({
      events: [
        event('a', { timestamp: new Date(NOW - 30 * 60 * 1000).toISOString() }),
        event('b', { event_name: 'llm.output_tokens' }),
        event('c', { customer_id: other }),
      ],
    });
    const ids = (page: { items: DodoPayments.Event[] }) => page.items.map((item) => item.event_id).sort();
    expect(ids(await client.usageEvents.list({ customer_id: customerId }))).toEqual(['a', 'b']);
    expect(ids(await client.usageEvents.list({ event_name: 'llm.output_tokens' }))).toEqual(['b']);
    expect(ids(await client.usageEvents.list({ start: new Date(NOW - 60_000).toISOString() }))).toEqual([
      'b',
      'c',
    ]);
    expect(ids(await client.usageEvents.list({ end: new Date(NOW - 60_000).toISOString() }))).toEqual(['a']);
    const meter = await client.meters.create({
      name: 'Output tokens',
      event_name: 'llm.output_tokens',
      measurement_unit: 'tokens',
      aggregation: { type: 'sum', key: 'tokens' },
    });
    expect(ids(await client.usageEvents.list({ meter_id: meter.id }))).toEqual(['b']);
    await expect(client.usageEvents.list({ meter_id: meter.id, event_name: 'other' })).rejects.toBeInstanceOf(
      UnprocessableEntityError,
    );
    expect((await client.meters.retrieve(meter.id)).aggregation).toEqual({ type: 'sum', key: 'tokens' });
    expect((await client.meters.list()).items.map((item) => item.id)).toEqual([meter.id]);
    await expect(client.meters.retrieve('mtr_missing')).rejects.toBeInstanceOf(NotFoundError);
  });

  it('deducts credits asynchronously, exactly, carrying the fraction between batches', async () => {
    dodo.setBalance(customerId, entitlementId, '500');
    // 3 tokens per credit: each 1-token batch owes 0.333… credit, which no decimal holds exactly.
    const meter = dodo.createMeter({
      eventName: 'llm.input_tokens',
      creditEntitlementId: entitlementId,
      meterUnitsPerCredit: '3',
    });
    await client.usageEvents.ingest({ events: [event('u0', { metadata: { tokens: 1 } })] });
    // Asynchronous: nothing is deducted at ingest time.
    expect(dodo.balance(customerId, entitlementId)).toBe('500');
    await client.usageEvents.ingest({ events: [event('u1', { metadata: { tokens: 1 } })] });
    await client.usageEvents.ingest({ events: [event('u2', { metadata: { tokens: 1 } })] });
    await dodo.settle();
    const deductions = dodo.meterDeductions({ customerId });
    expect(deductions[0]).toMatchObject({ meterId: meter.id, meterUnits: '1', eventIds: ['u0'] });
    // The remainder is carried, so three thirds make exactly one credit, not 0.999999999999.
    expect(deductions.map((deduction) => deduction.credits)).toEqual([
      '0.333333333333',
      '0.333333333333',
      '0.333333333334',
    ]);
    expect(dodo.balance(customerId, entitlementId)).toBe('499');
    const ledger = await client.creditEntitlements.balances.listLedger(customerId, {
      credit_entitlement_id: entitlementId,
      transaction_type: 'credit_deducted',
      page_size: 100,
    });
    expect(ledger.items).toHaveLength(3);
    expect(ledger.items[0]).toMatchObject({
      reference_type: 'meter',
      reference_id: meter.id,
      is_credit: false,
    });
  });

  it('deducts sum(tokens) / meter_units_per_credit to the 10^-12 credit, however the usage is batched', async () => {
    dodo.setBalance(customerId, entitlementId, '500');
    // 15 credits per 1M tokens (GPT-4o-mini input at $0.15 per 1M, 100 credits per dollar), written inexactly.
    dodo.createMeter({
      eventName: 'llm.input_tokens',
      creditEntitlementId: entitlementId,
      meterUnitsPerCredit: '66666.666666',
    });
    const sizes = [1, 999, 12345, 1, 7, 250000];
    for (const [i, tokens] of sizes.entries()) {
      await client.usageEvents.ingest({ events: [event(`v${i}`, { metadata: { tokens } })] });
    }
    await dodo.settle();
    const total = dodo
      .meterDeductions()
      .reduce((sum, deduction) => sum + parseCredits(deduction.credits, 10n ** 12n), 0n);
    const tokens = BigInt(sizes.reduce((sum, size) => sum + size, 0));
    expect(total).toBe((tokens * 10n ** 12n * 10n ** 6n) / 66666666666n);
    expect(parseCredits(dodo.balance(customerId, entitlementId) ?? '', 10n ** 12n)).toBe(
      500n * 10n ** 12n - total,
    );
  });

  it('deducts through a meter linked on a usage-based product, sends credit.deducted and credit.balance_low once', async () => {
    dodo.setBalance(customerId, entitlementId, '101');
    const meter = await client.meters.create({
      name: 'Input tokens',
      event_name: 'llm.input_tokens',
      measurement_unit: 'tokens',
      aggregation: { type: 'sum', key: 'tokens' },
      filter: { conjunction: 'and', clauses: [{ key: 'model', operator: 'equals', value: 'gpt-4o' }] },
    });
    await client.products.create({
      name: 'Usage',
      tax_category: 'saas',
      price: {
        type: 'usage_based_price',
        fixed_price: 0,
        currency: 'USD',
        discount: 0,
        purchasing_power_parity: false,
        payment_frequency_count: 1,
        payment_frequency_interval: 'Month',
        subscription_period_count: 1,
        subscription_period_interval: 'Year',
        meters: [
          { meter_id: meter.id, credit_entitlement_id: entitlementId, meter_units_per_credit: '4000' },
        ],
      },
    });
    await client.usageEvents.ingest({
      events: [
        event('x1', { metadata: { model: 'gpt-4o', tokens: 2000 } }),
        event('x2', { metadata: { model: 'gpt-4o', tokens: '2000' } }),
        event('x3', { metadata: { model: 'gpt-4o-mini', tokens: 4_000_000 } }),
      ],
    });
    await dodo.settle();
    expect(dodo.balance(customerId, entitlementId)).toBe('100');
    await client.usageEvents.ingest({ events: [event('x4', { metadata: { model: 'gpt-4o', tokens: 6 } })] });
    await client.usageEvents.ingest({ events: [event('x5', { metadata: { model: 'gpt-4o', tokens: 4 } })] });
    await dodo.settle();
    expect(dodo.balance(customerId, entitlementId)).toBe('99.9975');
    const types = dodo.webhookEvents().map((webhook) => webhook.type);
    expect(types.filter((type) => type === 'credit.deducted')).toHaveLength(3);
    const low = dodo.webhookEvents().filter((webhook) => webhook.type === 'credit.balance_low');
    expect(low).toHaveLength(1);
    expect(low[0]?.payload.data).toMatchObject({
      available_balance: '99.9985',
      threshold_amount: '100',
      customer_id: customerId,
    });
  });

  it('records usage beyond the balance as overage, and a top-up repays it first', async () => {
    dodo.setBalance(customerId, entitlementId, '1');
    dodo.createMeter({
      eventName: 'llm.input_tokens',
      creditEntitlementId: entitlementId,
      meterUnitsPerCredit: '1000',
    });
    await client.usageEvents.ingest({ events: [event('o1', { metadata: { tokens: 3500 } })] });
    await dodo.settle();
    const balance = await client.creditEntitlements.balances.retrieve(customerId, {
      credit_entitlement_id: entitlementId,
    });
    expect(balance).toMatchObject({ balance: '0', overage: '2.5' });
    expect(dodo.addCredits(customerId, entitlementId, '10')).toBe('7.5');
  });
});
