import { type ClientOptions, DodoPayments } from 'dodopayments';
import { createAdmin, type DodoEmulatorAdmin } from './admin.js';
import { Catalog } from './catalog.js';
import { Checkouts } from './checkout.js';
import { CreditLedger } from './credits.js';
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
export { DodoEmulatorError } from './errors.js';
export type { EventFilter } from './events.js';
export type { FaultSpec } from './faults.js';
export type { MeterDeduction } from './meters.js';
export type { DodoEmulatorOptions } from './options.js';
export type { LoggedRequest } from './server.js';
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
 * const customer = dodo.createCustomer({ email: 'ada@example.com' });
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
  const catalog = new Catalog(runtime);
  // Subscriptions are created after the ledger, which asks them about low-balance context.
  let subscriptions: Subscriptions | undefined;
  const credits = new CreditLedger(runtime, webhooks, config.balanceLowThreshold, {
    entitlementName: (id) => catalog.entitlement(id).name,
    subscriptionCredits: (customerId, entitlementId) =>
      subscriptions?.activeGranting(customerId, entitlementId),
  });
  const events = new EventStore(runtime, catalog);
  const meters = new Meters(runtime, catalog, credits, () => config.meterDelayMs);
  const payments = new Payments(runtime, catalog, credits, webhooks);
  subscriptions = new Subscriptions(runtime, catalog, payments, webhooks);
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
