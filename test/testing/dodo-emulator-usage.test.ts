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
    dodo = await createDodoEmulator({ now: () => clock, meterDelayMs: 20 });
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
    expect(dodo.ingestedEvents()).toEqual([]);

    // One unknown customer fails the whole request, with the 404 Dodo answers for unknown ids.
    const unknown = await client.usageEvents
      .ingest({ events: [event('good'), event('c1', { customer_id: 'cus_nobody' })] })
      .catch((caught: unknown) => caught);
    expect(unknown).toBeInstanceOf(NotFoundError);
    expect((unknown as Error).message).toMatch(/cus_nobody/);
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

  /** A usage plan linking the input meter to the credits at `rate`, the customer subscribed to it. */
  function subscribedAt(rate: string, options: { freeThreshold?: number; subscribe?: boolean } = {}) {
    const meter = dodo.createMeter({ eventName: 'llm.input_tokens' });
    const plan = dodo.createUsagePlan({
      creditEntitlementId: entitlementId,
      meters: [{ meterId: meter.id, meterUnitsPerCredit: rate, freeThreshold: options.freeThreshold }],
    });
    const subscription =
      options.subscribe === false ? undefined : dodo.subscribe(customerId, plan.product_id);
    return { meter, plan, subscription };
  }

  it('deducts credits asynchronously, exactly at the precision, carrying the rest between batches', async () => {
    dodo.setBalance(customerId, entitlementId, '500');
    // 3 tokens per credit: each 1-token batch owes 0.333… credit; the entitlement holds cents.
    const { meter, subscription } = subscribedAt('3');
    await client.usageEvents.ingest({ events: [event('u0', { metadata: { tokens: 1 } })] });
    // Asynchronous: nothing is deducted at ingest time.
    expect(dodo.balance(customerId, entitlementId)).toBe('500');
    await client.usageEvents.ingest({ events: [event('u1', { metadata: { tokens: 1 } })] });
    await client.usageEvents.ingest({ events: [event('u2', { metadata: { tokens: 1 } })] });
    await dodo.settle();
    const deductions = dodo.meterDeductions({ customerId });
    expect(deductions[0]).toMatchObject({
      meterId: meter.id,
      meterUnits: '1',
      eventIds: ['u0'],
      subscriptionId: subscription?.subscription_id,
    });
    // Never finer than the precision; the remainder is carried, so three thirds make one credit.
    expect(deductions.map((deduction) => deduction.credits)).toEqual(['0.33', '0.33', '0.34']);
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

  it('deducts sum(tokens) / meter_units_per_credit to the precision, however the usage is batched', async () => {
    const fine = dodo.createCreditEntitlement({ precision: 10 }).id;
    dodo.setBalance(customerId, fine, '500');
    // 15 credits per 1M tokens (GPT-4o-mini input at $0.15 per 1M, 100 credits per dollar), written inexactly.
    const meter = dodo.createMeter({ eventName: 'llm.input_tokens' });
    const plan = dodo.createUsagePlan({
      creditEntitlementId: fine,
      meters: [{ meterId: meter.id, meterUnitsPerCredit: '66666.666666' }],
    });
    dodo.subscribe(customerId, plan.product_id);
    const sizes = [1, 999, 12345, 1, 7, 250000];
    for (const [i, tokens] of sizes.entries()) {
      await client.usageEvents.ingest({ events: [event(`v${i}`, { metadata: { tokens } })] });
    }
    await dodo.settle();
    const total = dodo
      .meterDeductions()
      .reduce((sum, deduction) => sum + parseCredits(deduction.credits, 10n ** 12n), 0n);
    const tokens = BigInt(sizes.reduce((sum, size) => sum + size, 0));
    // floor at 10 decimals (10^-10 credit = 100 units of 10^-12) of the exact total.
    const exact = (tokens * 10n ** 12n * 10n ** 6n) / 66666666666n;
    expect(total).toBe(exact - (exact % 100n));
    expect(parseCredits(dodo.balance(customerId, fine) ?? '', 10n ** 12n)).toBe(500n * 10n ** 12n - total);
  });

  it('deducts nothing for a customer without an active subscription to a product linking the meter', async () => {
    dodo.setBalance(customerId, entitlementId, '100');
    const { plan } = subscribedAt('1000', { subscribe: false });
    await client.usageEvents.ingest({ events: [event('n1')] });
    await dodo.settle();
    // Ingested (Dodo records the event), never deducted: no subscription bills it.
    expect(dodo.ingestedEvents().map((stored) => stored.event_id)).toEqual(['n1']);
    expect(dodo.balance(customerId, entitlementId)).toBe('100');
    expect(dodo.meterDeductions()).toEqual([]);

    const subscription = dodo.subscribe(customerId, plan.product_id);
    await client.usageEvents.ingest({ events: [event('n2')] });
    await dodo.settle();
    expect(dodo.balance(customerId, entitlementId)).toBe('99');
    // The subscription on hold, paused, past due or cancelled: usage is not deducted.
    for (const [index, status] of (['past_due', 'on_hold', 'paused'] as const).entries()) {
      dodo.setSubscriptionStatus(subscription.subscription_id, status);
      await client.usageEvents.ingest({ events: [event(`s${index}`)] });
      await dodo.settle();
      expect(dodo.balance(customerId, entitlementId)).toBe('99');
      dodo.setSubscriptionStatus(subscription.subscription_id, 'active');
    }
    dodo.cancelSubscription(subscription.subscription_id);
    await client.usageEvents.ingest({ events: [event('c1')] });
    await dodo.settle();
    expect(dodo.balance(customerId, entitlementId)).toBe('99');
    const subscriptionView = await client.subscriptions.retrieve(subscription.subscription_id);
    expect(subscriptionView.meter_credit_entitlement_cart).toEqual([
      expect.objectContaining({ credit_entitlement_id: entitlementId, meter_units_per_credit: '1000' }),
    ]);
  });

  it("refuses usage-based products Dodo's product form cannot build", async () => {
    const meter = await client.meters.create({
      name: 'Input tokens',
      event_name: 'llm.input_tokens',
      measurement_unit: 'tokens',
      aggregation: { type: 'sum', key: 'tokens' },
    });
    const price = (meters: DodoPayments.AddMeterToPrice[]): DodoPayments.Price => ({
      type: 'usage_based_price',
      fixed_price: 0,
      currency: 'USD',
      discount: 0,
      purchasing_power_parity: false,
      payment_frequency_count: 1,
      payment_frequency_interval: 'Month',
      subscription_period_count: 1,
      subscription_period_interval: 'Year',
      meters,
    });
    const create = (meters: DodoPayments.AddMeterToPrice[], attach = true) =>
      client.products.create({
        name: 'Usage',
        tax_category: 'saas',
        price: price(meters),
        credit_entitlements: attach ? [{ credit_entitlement_id: entitlementId, credits_amount: '0' }] : [],
      });
    const link = { meter_id: meter.id, credit_entitlement_id: entitlementId, meter_units_per_credit: '4000' };
    // The credit must be attached to the product before a meter bills in it.
    await expect(create([link], false)).rejects.toThrow(/not attached to this product/);
    await expect(create([{ ...link, meter_units_per_credit: null }])).rejects.toThrow(
      /meter_units_per_credit is required/,
    );
    await expect(create([{ ...link, meter_units_per_credit: '-1' }])).rejects.toBeInstanceOf(
      UnprocessableEntityError,
    );
    await expect(create([{ ...link, meter_id: 'mtr_missing' }])).rejects.toBeInstanceOf(NotFoundError);
    const more = await Promise.all(
      ['a', 'b', 'c'].map((name) =>
        client.meters.create({
          name,
          event_name: name,
          measurement_unit: 'x',
          aggregation: { type: 'count' },
        }),
      ),
    );
    await expect(create([link, ...more.map((extra) => ({ ...link, meter_id: extra.id }))])).rejects.toThrow(
      /at most 3 meters/,
    );
    const peak = await client.meters.create({
      name: 'Peak',
      event_name: 'peak',
      measurement_unit: 'x',
      aggregation: { type: 'max', key: 'tokens' },
    });
    await expect(create([{ ...link, meter_id: peak.id }])).rejects.toThrow(/only sum and count meters/);
    const third = [1, 2, 3, 4].map((i) => ({
      credit_entitlement_id: dodo.createCreditEntitlement().id,
      credits_amount: String(i),
    }));
    await expect(
      client.products.create({
        name: 'x',
        tax_category: 'saas',
        price: price([]),
        credit_entitlements: third,
      }),
    ).rejects.toThrow(/At most 3 credit entitlements/);
    expect((await create([link])).price).toMatchObject({ type: 'usage_based_price' });
  });

  it('deducts through a meter with a filter, sends credit.deducted, and credit.balance_low for the subscription threshold', async () => {
    dodo.setBalance(customerId, entitlementId, '101');
    const meter = await client.meters.create({
      name: 'Input tokens',
      event_name: 'llm.input_tokens',
      measurement_unit: 'tokens',
      aggregation: { type: 'sum', key: 'tokens' },
      filter: { conjunction: 'and', clauses: [{ key: 'model', operator: 'equals', value: 'gpt-4o' }] },
    });
    // 20% of the 500 credits the plan issues per cycle: credit.balance_low under 100.
    const plan = await client.products.create({
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
      credit_entitlements: [
        { credit_entitlement_id: entitlementId, credits_amount: '500', low_balance_threshold_percent: 20 },
      ],
    });
    const subscription = dodo.subscribe(customerId, plan.product_id, { onDemand: 'mandate' });
    dodo.setBalance(customerId, entitlementId, '101');
    await client.usageEvents.ingest({
      events: [
        event('x1', { metadata: { model: 'gpt-4o', tokens: 2000 } }),
        event('x2', { metadata: { model: 'gpt-4o', tokens: '2000' } }),
        event('x3', { metadata: { model: 'gpt-4o-mini', tokens: 4_000_000 } }),
      ],
    });
    await dodo.settle();
    expect(dodo.balance(customerId, entitlementId)).toBe('100');
    await client.usageEvents.ingest({ events: [event('x4', { metadata: { model: 'gpt-4o', tokens: 40 } })] });
    await client.usageEvents.ingest({ events: [event('x5', { metadata: { model: 'gpt-4o', tokens: 40 } })] });
    await dodo.settle();
    expect(dodo.balance(customerId, entitlementId)).toBe('99.98');
    const types = dodo.webhookEvents().map((webhook) => webhook.type);
    expect(types.filter((type) => type === 'credit.deducted')).toHaveLength(3);
    const low = dodo.webhookEvents().filter((webhook) => webhook.type === 'credit.balance_low');
    expect(low).toHaveLength(1);
    expect(low[0]?.payload.data).toEqual({
      payload_type: 'CreditBalanceLow',
      available_balance: '99.99',
      brand_id: expect.any(String),
      credit_entitlement_id: entitlementId,
      credit_entitlement_name: 'Credits',
      customer_id: customerId,
      subscription_credits_amount: '500',
      subscription_id: subscription.subscription_id,
      threshold_amount: '100',
      threshold_percent: 20,
    });
  });

  it('sends no credit.balance_low to a customer whose subscriptions set no threshold', async () => {
    dodo.setBalance(customerId, entitlementId, '2');
    subscribedAt('1000');
    await client.usageEvents.ingest({ events: [event('l1', { metadata: { tokens: 2000 } })] });
    await dodo.settle();
    expect(dodo.balance(customerId, entitlementId)).toBe('0');
    expect(dodo.webhookEvents().map((webhook) => webhook.type)).not.toContain('credit.balance_low');
  });

  it('stops at zero when overage is disabled: what the balance cannot cover is not deducted', async () => {
    dodo.setBalance(customerId, entitlementId, '1');
    subscribedAt('1000');
    await client.usageEvents.ingest({ events: [event('o1', { metadata: { tokens: 3500 } })] });
    await dodo.settle();
    expect(
      await client.creditEntitlements.balances.retrieve(customerId, { credit_entitlement_id: entitlementId }),
    ).toMatchObject({ balance: '0', overage: '0' });
    expect(dodo.meterDeductions()[0]).toMatchObject({
      credits: '1',
      deducted: '1',
      overage: '0',
      unbilled: '2.5',
    });
    expect(dodo.webhookEvents().map((webhook) => webhook.type)).not.toContain('credit.overage_charged');
  });

  it('charges usage beyond the balance as its own overage entry when overage is enabled, up to the limit', async () => {
    entitlementId = dodo.createCreditEntitlement({
      precision: 2,
      overage_enabled: true,
      price_per_unit: '0.01',
      currency: 'USD',
      overage_limit: 2,
    }).id;
    dodo.setBalance(customerId, entitlementId, '1');
    subscribedAt('1000');
    await client.usageEvents.ingest({ events: [event('o1', { metadata: { tokens: 3500 } })] });
    await dodo.settle();
    expect(
      await client.creditEntitlements.balances.retrieve(customerId, { credit_entitlement_id: entitlementId }),
    ).toMatchObject({ balance: '0', overage: '2' });
    expect(dodo.meterDeductions()[0]).toMatchObject({ deducted: '1', overage: '2', unbilled: '0.5' });
    const ledger = dodo.ledger({ customerId }).map((entry) => [entry.transaction_type, entry.amount]);
    expect(ledger.slice(-2)).toEqual([
      ['credit_deducted', '1'],
      ['overage_charged', '2'],
    ]);
    expect(
      dodo
        .webhookEvents()
        .map((webhook) => webhook.type)
        .slice(-2),
    ).toEqual(['credit.deducted', 'credit.overage_charged']);
    // New credits do not repay the overage under the default `forgive_at_reset`.
    expect(dodo.addCredits(customerId, entitlementId, '10')).toBe('10');
  });

  it("deducts only past the meter's free threshold for the billing cycle", async () => {
    dodo.setBalance(customerId, entitlementId, '10');
    subscribedAt('1', { freeThreshold: 3 });
    await client.usageEvents.ingest({ events: [event('f1', { metadata: { tokens: 2 } })] });
    await client.usageEvents.ingest({ events: [event('f2', { metadata: { tokens: 2 } })] });
    await dodo.settle();
    expect(dodo.balance(customerId, entitlementId)).toBe('9');
  });

  it('refuses what Dodo does not have: a meter linked on its own, a global low-balance threshold', async () => {
    expect(() =>
      dodo.createMeter({
        eventName: 'x',
        creditEntitlementId: entitlementId,
        meterUnitsPerCredit: '1',
      } as never),
    ).toThrow(/linked to credits on a usage-based product/);
    await expect(createDodoEmulator({ balanceLowThreshold: '100' } as never)).rejects.toThrow(
      /low_balance_threshold_percent/,
    );
    const meter = await client.meters.create({
      name: 'x',
      event_name: 'x',
      measurement_unit: 'x',
      aggregation: { type: 'count' },
      credit_entitlement_id: entitlementId,
      meter_units_per_credit: '1',
    } as never);
    dodo.setBalance(customerId, entitlementId, '5');
    await client.usageEvents.ingest({ events: [event('m1', { event_name: 'x' })] });
    await dodo.settle();
    // The extra fields are ignored, as Dodo's API ignores them: the meter deducts nothing.
    expect(meter.id).toMatch(/^mtr_/);
    expect(dodo.balance(customerId, entitlementId)).toBe('5');
  });
});
