import { type ClientOptions, DodoPayments } from 'dodopayments';
import { createAdmin, type DodoEmulatorAdmin } from './admin.js';
import { Catalog } from './catalog.js';
import { Checkouts } from './checkout.js';
import { CreditLedger } from './credits.js';
import { Disputes } from './disputes.js';
import { EventStore } from './events.js';
import { Faults } from './faults.js';
import { Meters } from './meters.js';
import { type DodoEmulatorOptions, resolveOptions } from './options.js';
import type { Parts } from './parts.js';
import { Payments } from './payments.js';
import { Router } from './router.js';
import { registerCatalogRoutes } from './routes/catalog.js';
import { registerCommerceRoutes } from './routes/commerce.js';
import { registerCreditRoutes } from './routes/credits.js';
import { registerUsageRoutes } from './routes/usage.js';
import { Runtime } from './runtime.js';
import { EmulatorServer, type LoggedRequest } from './server.js';
import { Subscriptions } from './subscriptions.js';
import { WebhookSender } from './webhooks.js';

export type { DodoEmulatorAdmin } from './admin.js';
export type { CreditUnits } from './amounts.js';
export type { CheckoutResult } from './checkout.js';
export type { DisputeOutcome } from './disputes.js';
export { DodoEmulatorError } from './errors.js';
export type { EventFilter } from './events.js';
export type { FaultSpec } from './faults.js';
export type { MeterDeduction } from './meters.js';
export type { DodoEmulatorOptions } from './options.js';
export type { LoggedRequest } from './server.js';
export type { ChargeOutcomeSpec } from './subscriptions.js';
export type { EmittedWebhook, WebhookDelivery, WebhookFilter } from './webhooks.js';

/** A running Dodo Payments emulator. */
export interface DodoEmulator extends DodoEmulatorAdmin {
  /** `http://127.0.0.1:<port>`: pass it as the SDK's `baseURL`. */
  readonly baseURL: string;
  /** The bearer token it expects. */
  readonly apiKey: string;
  /** The secret webhooks are signed with (`whsec_…`). */
  readonly webhookKey: string;
  /**
   * A real `DodoPayments` client pointed at the emulator, with its API key and webhook key.
   * `options` override (e.g. `{ maxRetries: 0, timeout: 500 }` in fault tests).
   */
  client(options?: ClientOptions): DodoPayments;
  /** Stops the server, every timer and every delivery in flight. */
  close(): Promise<void>;
}

/**
 * Starts an emulator of the Dodo Payments API subset this package uses, on loopback.
 *
 * @example
 * ```ts
 * const dodo = await createDodoEmulator({ webhookUrl: 'http://127.0.0.1:3000/webhooks/dodo' });
 * const credits = dodo.createCreditEntitlement({ name: 'USD credits' });
 * const meter = dodo.createMeter({ eventName: 'llm.input_tokens' });
 * // Meters deduct credits only through a usage-based product the customer is subscribed to.
 * const plan = dodo.createUsagePlan({ creditEntitlementId: credits.id, meters: [{ meterId: meter.id, meterUnitsPerCredit: '4000' }] });
 * const customer = dodo.createCustomer({ email: 'ada@example.com' });
 * dodo.subscribe(customer.customer_id, plan.product_id);
 * dodo.setBalance(customer.customer_id, credits.id, '500');
 * const client = dodo.client();
 * await client.creditEntitlements.balances.retrieve(customer.customer_id, { credit_entitlement_id: credits.id });
 * await dodo.close();
 * ```
 */
export async function createDodoEmulator(options: DodoEmulatorOptions = {}): Promise<DodoEmulator> {
  const config = resolveOptions(options);
  const runtime = new Runtime(config.businessId, config.now);
  const webhooks = new WebhookSender(runtime, {
    url: config.webhookUrl,
    key: config.webhookKey,
    retry: config.webhookRetry,
    timeoutMs: config.webhookTimeoutMs,
    duplicate: config.duplicateWebhooks,
    shuffle: config.shuffleWebhooks,
  });
  // The parts refer to each other; each is created once, the lookups resolve at call time.
  let meters: Meters | undefined;
  let subscriptions: Subscriptions | undefined;
  const catalog = new Catalog(runtime, (meterId) => meters!.meter(meterId));
  const credits = new CreditLedger(
    runtime,
    webhooks,
    {
      entitlement: (id) => catalog.entitlement(id),
      lowBalanceWatches: (customerId, entitlementId) =>
        subscriptions?.lowBalanceWatches(customerId, entitlementId) ?? [],
    },
    config.amountStyle,
  );
  const events = new EventStore(runtime, catalog);
  meters = new Meters(
    runtime,
    catalog,
    credits,
    (customerId) => subscriptions?.activePlans(customerId) ?? [],
    () => config.meterDelayMs,
  );
  const payments = new Payments(runtime, catalog, credits, webhooks, {
    exchangeRates: config.exchangeRates,
    taxPercent: config.taxPercent,
  });
  subscriptions = new Subscriptions(runtime, catalog, payments, webhooks);
  const disputes = new Disputes(runtime, payments, webhooks, config.amountStyle);
  let baseURL = '';
  const checkouts = new Checkouts(runtime, catalog, payments, subscriptions, () => baseURL);
  const parts: Parts = {
    runtime,
    catalog,
    credits,
    events,
    meters,
    payments,
    subscriptions,
    checkouts,
    disputes,
    webhooks,
  };

  const router = new Router();
  registerCreditRoutes(router, parts);
  registerUsageRoutes(router, parts);
  registerCatalogRoutes(router, parts);
  registerCommerceRoutes(router, parts);
  const faults = new Faults();
  const log: LoggedRequest[] = [];
  const server = new EmulatorServer({
    host: config.host,
    port: config.port,
    apiKey: config.apiKey,
    router,
    faults,
    log,
  });
  baseURL = await server.listen();

  let closing: Promise<void> | undefined;
  return {
    ...createAdmin(parts, faults, log),
    baseURL,
    apiKey: config.apiKey,
    webhookKey: config.webhookKey,
    client: (clientOptions = {}) =>
      new DodoPayments({
        bearerToken: config.apiKey,
        webhookKey: config.webhookKey,
        baseURL,
        ...clientOptions,
      }),
    close: () => {
      closing ??= (async () => {
        runtime.close();
        webhooks.close();
        await server.close();
      })();
      return closing;
    },
  };
}
