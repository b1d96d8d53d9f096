import {
  AuthenticationError,
  BadRequestError,
  ConflictError,
  type DodoPayments,
  NotFoundError,
  UnprocessableEntityError,
} from 'dodopayments';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createDodoEmulator, type DodoEmulator } from '../../src/testing/index.js';

describe('Dodo emulator: credits, balances, ledger', () => {
  let dodo: DodoEmulator;
  let client: DodoPayments;
  let entitlementId: string;
  let customerId: string;

  beforeEach(async () => {
    dodo = await createDodoEmulator();
    client = dodo.client({ maxRetries: 0 });
    entitlementId = dodo.createCreditEntitlement({ name: 'USD credits', precision: 3 }).id;
    customerId = dodo.createCustomer({ email: 'ada@example.com', name: 'Ada' }).customer_id;
  });
  afterEach(() => dodo.close());

  it('listens on loopback and refuses a missing or wrong bearer token with 401', async () => {
    expect(dodo.baseURL).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const anonymous = dodo.client({ bearerToken: 'wrong', maxRetries: 0 });
    await expect(anonymous.customers.retrieve(customerId)).rejects.toBeInstanceOf(AuthenticationError);
    const response = await fetch(`${dodo.baseURL}/customers/${customerId}`);
    expect(response.status).toBe(401);
    expect(await response.json()).toMatchObject({ code: 'UNAUTHORIZED' });
  });

  it('answers 404 for a customer without a balance, then the exact balance once set', async () => {
    const params = { credit_entitlement_id: entitlementId };
    await expect(client.creditEntitlements.balances.retrieve(customerId, params)).rejects.toBeInstanceOf(
      NotFoundError,
    );
    await expect(client.creditEntitlements.balances.retrieve('cus_nobody', params)).rejects.toBeInstanceOf(
      NotFoundError,
    );
    expect(dodo.setBalance(customerId, entitlementId, '4999.985')).toBe('4999.985');
    const balance = await client.creditEntitlements.balances.retrieve(customerId, params);
    expect(balance).toMatchObject({
      balance: '4999.985',
      overage: '0',
      customer_id: customerId,
      credit_entitlement_id: entitlementId,
    });
    const listed = await client.creditEntitlements.balances.list(entitlementId, { customer_id: customerId });
    expect(listed.items.map((item) => item.balance)).toEqual(['4999.985']);
    const perCustomer = await client.customers.listCreditEntitlements(customerId);
    expect(perCustomer.items).toEqual([
      expect.objectContaining({ credit_entitlement_id: entitlementId, balance: '4999.985' }),
    ]);
  });

  it('creates ledger entries, honours idempotency_key with 409, refuses overdrafts with 400', async () => {
    const params = { credit_entitlement_id: entitlementId };
    const credit = await client.creditEntitlements.balances.createLedgerEntry(customerId, {
      ...params,
      entry_type: 'credit',
      amount: '100.5',
      idempotency_key: 'topup-1',
      reason: 'top-up',
    });
    expect(credit).toMatchObject({
      entry_type: 'credit',
      amount: '100.5',
      balance_before: '0',
      balance_after: '100.5',
      is_credit: true,
      reason: 'top-up',
    });
    await expect(
      client.creditEntitlements.balances.createLedgerEntry(customerId, {
        ...params,
        entry_type: 'credit',
        amount: '100.5',
        idempotency_key: 'topup-1',
      }),
    ).rejects.toBeInstanceOf(ConflictError);
    expect(dodo.balance(customerId, entitlementId)).toBe('100.5');

    const debit = await client.creditEntitlements.balances.createLedgerEntry(customerId, {
      ...params,
      entry_type: 'debit',
      amount: '0.125',
    });
    expect(debit).toMatchObject({ balance_after: '100.375', is_credit: false });
    await expect(
      client.creditEntitlements.balances.createLedgerEntry(customerId, {
        ...params,
        entry_type: 'debit',
        amount: '1000',
      }),
    ).rejects.toBeInstanceOf(BadRequestError);
    for (const amount of ['-1', 'ten', '0', '1.0001']) {
      await expect(
        client.creditEntitlements.balances.createLedgerEntry(customerId, {
          ...params,
          entry_type: 'credit',
          amount,
        }),
      ).rejects.toBeInstanceOf(UnprocessableEntityError);
    }
    await expect(
      client.creditEntitlements.balances.createLedgerEntry('cus_nobody', {
        ...params,
        entry_type: 'credit',
        amount: '1',
      }),
    ).rejects.toBeInstanceOf(NotFoundError);

    const ledger = await client.creditEntitlements.balances.listLedger(customerId, {
      ...params,
      page_size: 100,
    });
    expect(ledger.items.map((entry) => [entry.transaction_type, entry.amount, entry.balance_after])).toEqual([
      ['credit_deducted', '0.125', '100.375'],
      ['credit_added', '100.5', '100.5'],
    ]);
    const onlyAdded = await client.creditEntitlements.balances.listLedger(customerId, {
      ...params,
      transaction_type: 'credit_added',
    });
    expect(onlyAdded.items).toHaveLength(1);

    const grants = await client.creditEntitlements.balances.listGrants(customerId, params);
    expect(grants.items).toEqual([
      expect.objectContaining({ initial_amount: '100.5', remaining_amount: '100.375', source_type: 'api' }),
    ]);
    expect(dodo.webhookEvents().map((webhook) => webhook.type)).toEqual(['credit.added', 'credit.deducted']);
  });

  it('creates and lists credit entitlements, customers and products through the API', async () => {
    const entitlement = await client.creditEntitlements.create({
      name: 'Tokens',
      unit: 'tokens',
      precision: 0,
      overage_enabled: false,
      rollover_enabled: false,
    });
    expect(entitlement.id).toMatch(/^cde_/);
    expect((await client.creditEntitlements.retrieve(entitlement.id)).name).toBe('Tokens');
    await expect(client.creditEntitlements.retrieve('cde_missing')).rejects.toBeInstanceOf(NotFoundError);
    await expect(
      client.creditEntitlements.create({
        name: 'x',
        unit: 'x',
        precision: 11,
        overage_enabled: false,
        rollover_enabled: false,
      }),
    ).rejects.toBeInstanceOf(UnprocessableEntityError);
    const entitlements = await client.creditEntitlements.list({ page_size: 100 });
    expect(entitlements.items.map((item) => item.name)).toEqual(['Tokens', 'USD credits']);

    const customer = await client.customers.create({ email: 'grace@example.com', name: 'Grace' });
    expect(await client.customers.retrieve(customer.customer_id)).toMatchObject({
      email: 'grace@example.com',
    });
    await expect(client.customers.create({ email: 'not-an-email', name: 'x' })).rejects.toBeInstanceOf(
      UnprocessableEntityError,
    );
    const customers = await client.customers.list({ email: 'grace@example.com' });
    expect(customers.items.map((item) => item.customer_id)).toEqual([customer.customer_id]);

    const product = await client.products.create({
      name: '$10 pack',
      tax_category: 'saas',
      price: {
        type: 'one_time_price',
        price: 1000,
        currency: 'USD',
        discount: 0,
        purchasing_power_parity: false,
      },
      credit_entitlements: [{ credit_entitlement_id: entitlementId, credits_amount: '1000' }],
    });
    expect(product.credit_entitlements[0]).toMatchObject({
      credit_entitlement_id: entitlementId,
      credits_amount: '1000',
    });
    expect((await client.products.retrieve(product.product_id)).name).toBe('$10 pack');
    const products = await client.products.list({ recurring: false });
    expect(products.items.map((item) => item.price)).toEqual([1000]);
  });

  it('paginates with page_size and a zero-based page_number, and refuses page_size > 100 with 422', async () => {
    for (let i = 0; i < 5; i += 1) dodo.createCustomer({ email: `c${i}@example.com` });
    const second = await client.customers.list({ page_size: 2, page_number: 1 });
    expect(second.items.map((item) => item.email)).toEqual(['c2@example.com', 'c1@example.com']);
    await expect(client.customers.list({ page_size: 101 })).rejects.toBeInstanceOf(UnprocessableEntityError);
  });

  it('admin methods throw clear errors for unknown customers, unknown entitlements and bad amounts', () => {
    expect(() => dodo.setBalance('cus_unknown', entitlementId, '1')).toThrow(
      /setBalance: unknown customer "cus_unknown"/,
    );
    expect(() => dodo.addCredits(customerId, 'cde_unknown', '1')).toThrow(
      /addCredits: unknown credit entitlement "cde_unknown"/,
    );
    expect(() => dodo.addCredits(customerId, entitlementId, '-5')).toThrow(
      /addCredits: credits must not be negative/,
    );
    expect(() => dodo.setBalance(customerId, entitlementId, 'lots')).toThrow(
      /setBalance: credits expected a decimal/,
    );
    // Every amount on Dodo is a multiple of the entitlement's precision (3 decimals here).
    expect(() => dodo.setBalance(customerId, entitlementId, '0.0005')).toThrow(
      /setBalance: "0.0005" credits is finer than the entitlement's precision \(3 decimals\)/,
    );
    expect(() => dodo.createCustomer({ email: 'nope' })).toThrow(
      /createCustomer: email "nope" is not an email address/,
    );
    expect(dodo.balance(customerId, entitlementId)).toBeUndefined();
    expect(dodo.addCredits(customerId, entitlementId, '2.5')).toBe('2.5');
    expect(dodo.setBalance(customerId, entitlementId, '1')).toBe('1');
    expect(dodo.ledger({ customerId }).map((entry) => [entry.transaction_type, entry.amount])).toEqual([
      ['credit_added', '2.5'],
      ['manual_adjustment', '1.5'],
    ]);
  });
});
