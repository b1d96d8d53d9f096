import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { DodoPayments } from 'dodopayments';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EventOf, WebhookType } from '../../src/dodo-webhooks/effects/index.js';
import { MemoryStore } from '../../src/store/memory.js';
import type { DodoEmulator } from '../../src/testing/index.js';
import { recordingLogger } from '../support/billing-app.js';
import { eventBody, postSigned, type Running, startEmulator, startWebhookApp } from './support.js';

/**
 * Every event type of the SDK's webhook union, read from the installed `dodopayments` itself
 * (the `type` literals of its webhook event interfaces): a type the SDK adds shows up here even
 * before anyone writes a payload for it.
 */
function unionTypesOfInstalledSdk(): string[] {
  const require = createRequire(import.meta.url);
  const root = dirname(require.resolve('dodopayments'));
  const declarations = readFileSync(join(root, 'resources', 'webhooks', 'webhooks.d.ts'), 'utf8');
  const union = /export type UnwrapWebhookEvent = ([^;]+);/.exec(declarations)?.[1] ?? '';
  const members = union.split('|').map((name) => name.trim());
  return members.map((member) => {
    const body = new RegExp(`export interface ${member} \\{([\\s\\S]*?)\\n\\}`).exec(declarations)?.[1] ?? '';
    const type = /type: '([^']+)';/.exec(body)?.[1];
    if (!type) throw new Error(`no type literal for ${member}`);
    return type;
  });
}

const AT = '2026-03-01T12:00:00.000Z';
let customerId = 'cus_conformance';
let paymentId = 'pay_conformance';
let entitlementId = 'cde_conformance';

/** Builders typed with the SDK's own types: the compiler checks every field. */
function payment(): DodoPayments.Payment {
  return {
    billing: { country: 'US' },
    brand_id: 'bra_1',
    business_id: 'bus_1',
    created_at: AT,
    currency: 'USD',
    customer: { customer_id: customerId, email: 'ada@example.com', name: 'Ada' },
    digital_products_delivered: false,
    disputes: [],
    is_multi_subscription: false,
    is_update_payment_method: false,
    metadata: {},
    payment_id: paymentId,
    payment_provider: 'dodo',
    refunds: [],
    retry_attempt: 0,
    settlement_amount: 2000,
    settlement_currency: 'USD',
    settlement_tax: 0,
    subscription_ids: [],
    total_amount: 2000,
    tax: 0,
    status: 'succeeded',
  };
}

function subscription(status: DodoPayments.SubscriptionStatus): EventOf<'subscription.active'>['data'] {
  return {
    addons: [],
    billing: { country: 'US' },
    brand_id: 'bra_1',
    cancel_at_next_billing_date: false,
    created_at: AT,
    credit_entitlement_cart: [],
    currency: 'USD',
    customer: { customer_id: customerId, email: 'ada@example.com', name: 'Ada' },
    has_payment_method: true,
    metadata: {},
    meter_credit_entitlement_cart: [],
    meters: [],
    next_billing_date: '2026-04-01T12:00:00.000Z',
    on_demand: false,
    payment_frequency_count: 1,
    payment_frequency_interval: 'Month',
    previous_billing_date: AT,
    product_id: 'pdt_plus',
    quantity: 1,
    recurring_pre_tax_amount: 2000,
    status,
    subscription_id: 'sub_conformance',
    subscription_period_count: 1,
    subscription_period_interval: 'Year',
    tax_inclusive: false,
    trial_period_days: 0,
    past_due_ends_at: status === 'past_due' ? '2026-03-08T12:00:00.000Z' : null,
  };
}

function refund(): DodoPayments.Refund {
  return {
    brand_id: 'bra_1',
    business_id: 'bus_1',
    created_at: AT,
    customer: { customer_id: customerId, email: 'ada@example.com', name: 'Ada' },
    is_partial: true,
    metadata: {},
    payment_id: paymentId,
    refund_id: 'ref_conformance',
    status: 'succeeded',
    amount: 500,
    currency: 'USD',
  };
}

function dispute(status: DodoPayments.DisputeStatus): DodoPayments.Dispute {
  return {
    amount: '5.00',
    business_id: 'bus_1',
    created_at: AT,
    currency: 'USD',
    dispute_id: `dsp_${status}`,
    dispute_stage: 'dispute',
    dispute_status: status,
    payment_id: paymentId,
  };
}

function ledgerEntry(
  transaction_type: DodoPayments.CreditEntitlements.CreditLedgerEntry['transaction_type'],
  is_credit: boolean,
): DodoPayments.CreditEntitlements.CreditLedgerEntry {
  return {
    id: `cle_${transaction_type}`,
    amount: '100',
    balance_after: is_credit ? '1100' : '900',
    balance_before: '1000',
    brand_id: 'bra_1',
    business_id: 'bus_1',
    created_at: AT,
    credit_entitlement_id: entitlementId,
    customer_id: customerId,
    is_credit,
    metadata: {},
    overage_after: '0',
    overage_before: '0',
    transaction_type,
  };
}

function payout(status: EventOf<'payout.created'>['data']['status']): EventOf<'payout.created'>['data'] {
  return {
    amount: 10000,
    business_id: 'bus_1',
    chargebacks: 0,
    created_at: AT,
    currency: 'USD',
    fee: 0,
    payment_method: 'bank',
    payout_id: 'pou_1',
    refunds: 0,
    status,
    tax: 0,
    updated_at: AT,
  };
}

function dunning(status: EventOf<'dunning.started'>['data']['status']): EventOf<'dunning.started'>['data'] {
  return {
    brand_id: 'bra_1',
    created_at: AT,
    customer_id: customerId,
    status,
    subscription_id: 'sub_conformance',
    trigger_state: 'past_due',
  };
}

function abandoned(
  status: EventOf<'abandoned_checkout.detected'>['data']['status'],
): EventOf<'abandoned_checkout.detected'>['data'] {
  return {
    abandoned_at: AT,
    abandonment_reason: 'checkout_incomplete',
    brand_id: 'bra_1',
    customer_id: customerId,
    payment_id: paymentId,
    status,
  };
}

function grant(
  status: EventOf<'entitlement_grant.created'>['data']['status'],
): EventOf<'entitlement_grant.created'>['data'] {
  return {
    id: 'egr_1',
    brand_id: 'bra_1',
    business_id: 'bus_1',
    created_at: AT,
    customer_id: customerId,
    entitlement_id: 'ent_1',
    integration_type: 'license_key',
    metadata: {},
    status,
    updated_at: AT,
  };
}

/**
 * One payload per event type of the union, each the SDK's `data` type for it. The mapped type
 * makes the list exhaustive: a type the SDK adds, or a field it requires, fails the typecheck.
 */
function payloads(): { [T in WebhookType]: EventOf<T>['data'] } {
  return {
    'abandoned_checkout.detected': abandoned('abandoned'),
    'abandoned_checkout.recovered': abandoned('recovered'),
    'credit.added': ledgerEntry('credit_added', true),
    'credit.balance_low': {
      available_balance: '15',
      brand_id: 'bra_1',
      credit_entitlement_id: entitlementId,
      credit_entitlement_name: 'USD credits',
      customer_id: customerId,
      subscription_credits_amount: '100',
      subscription_id: 'sub_conformance',
      threshold_amount: '20',
      threshold_percent: 20,
    },
    'credit.deducted': ledgerEntry('credit_deducted', false),
    'credit.expired': ledgerEntry('credit_expired', false),
    'credit.manual_adjustment': ledgerEntry('manual_adjustment', true),
    'credit.overage_charged': ledgerEntry('overage_charged', false),
    'credit.overage_reset': ledgerEntry('overage_reset', true),
    'credit.rolled_over': ledgerEntry('credit_rolled_over', true),
    'credit.rollover_forfeited': ledgerEntry('rollover_forfeited', false),
    'dispute.accepted': dispute('dispute_accepted'),
    'dispute.cancelled': dispute('dispute_cancelled'),
    'dispute.challenged': dispute('dispute_challenged'),
    'dispute.expired': dispute('dispute_expired'),
    'dispute.lost': dispute('dispute_lost'),
    'dispute.opened': dispute('dispute_opened'),
    'dispute.won': dispute('dispute_won'),
    'dunning.recovered': dunning('recovered'),
    'dunning.started': dunning('recovering'),
    'entitlement_grant.created': grant('Pending'),
    'entitlement_grant.delivered': grant('Delivered'),
    'entitlement_grant.failed': grant('Failed'),
    'entitlement_grant.revoked': grant('Revoked'),
    'license_key.created': {
      id: 'lic_1',
      brand_id: 'bra_1',
      business_id: 'bus_1',
      created_at: AT,
      customer_id: customerId,
      instances_count: 0,
      key: 'KEY-1',
      product_id: 'pdt_1',
      source: 'auto',
      status: 'active',
    },
    'payment.cancelled': { ...payment(), status: 'cancelled' },
    'payment.failed': { ...payment(), status: 'failed' },
    'payment.processing': { ...payment(), status: 'processing' },
    'payment.succeeded': payment(),
    'payout.created': payout('not_initiated'),
    'payout.failed': payout('failed'),
    'payout.in_progress': payout('in_progress'),
    'payout.on_hold': payout('on_hold'),
    'payout.success': payout('success'),
    'refund.failed': { ...refund(), status: 'failed' },
    'refund.succeeded': refund(),
    'subscription.active': subscription('active'),
    'subscription.cancelled': subscription('cancelled'),
    'subscription.expired': subscription('expired'),
    'subscription.failed': subscription('failed'),
    'subscription.on_hold': subscription('on_hold'),
    'subscription.past_due': subscription('past_due'),
    'subscription.paused': subscription('paused'),
    'subscription.plan_changed': subscription('active'),
    'subscription.renewed': subscription('active'),
    'subscription.unpaused': subscription('active'),
    'subscription.update_payment_method': subscription('active'),
    'subscription.updated': subscription('active'),
  };
}

describe("dodoWebhooks answers every event type of the SDK's webhook union with 2xx", () => {
  let dodo: DodoEmulator;
  let app: Running & { webhookUrl: string };
  const store = new MemoryStore();
  const logger = recordingLogger();

  beforeAll(async () => {
    // The effects that read Dodo (a refund's or a dispute's payment) find a real payment.
    dodo = await startEmulator();
    entitlementId = dodo.createCreditEntitlement().id;
    customerId = dodo.createCustomer({ email: 'ada@example.com' }).customer_id;
    const pack = dodo.createCreditPack({
      name: 'Pack',
      price: 2000,
      creditEntitlementId: entitlementId,
      credits: 2000,
    });
    const session = await dodo.client().checkoutSessions.create({
      product_cart: [{ product_id: pack.product_id, quantity: 1 }],
      customer: { customer_id: customerId },
    });
    paymentId = dodo.completeCheckout(session.session_id).payment!.payment_id;
    app = await startWebhookApp({
      store,
      dodo: dodo.client(),
      webhookKey: dodo.webhookKey,
      creditEntitlementId: entitlementId,
      logger,
    });
  });
  afterAll(async () => {
    await app.close();
    await dodo.close();
  });

  it('has a typed payload for every type the installed SDK declares', () => {
    expect(Object.keys(payloads()).sort()).toEqual(unionTypesOfInstalledSdk().sort());
  });

  // The payloads are built when each test runs, once the emulator's customer and payment exist.
  it.each(Object.keys(payloads()) as WebhookType[])(
    '%s is applied or acknowledged with 2xx',
    async (type) => {
      const data = payloads()[type];
      const answer = await postSigned(app.webhookUrl, {
        secret: dodo.webhookKey,
        body: eventBody(type, { payload_type: 'conformance', ...(data as object) }, new Date(AT)),
      });
      expect([type, answer.status, answer.body]).toEqual([type, 200, { received: true }]);
    },
  );

  it('applied the built-in effects of those payloads, and logged no error', async () => {
    // $20 paid, then a $5 refund and two $5 disputes (lost and accepted) took out $15.
    expect((await store.getSpend(customerId)).spend).toBe(5_000_000_000_000n);
    expect(await store.getSubscriptions(customerId)).toEqual([
      expect.objectContaining({ subscriptionId: 'sub_conformance', productId: 'pdt_plus' }),
    ]);
    expect(logger.lines.filter((line) => line.level === 'error')).toEqual([]);
  });
});
