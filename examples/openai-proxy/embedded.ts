import { createApiAccountCheckout, parseUsd } from '../../src/index.js';
import { applySetup } from '../../src/setup/apply.js';
import { planSetup } from '../../src/setup/plan.js';
import { createDodoEmulator, type DodoEmulator } from '../../src/testing/index.js';
import { ApiKeys } from './api-keys.js';
import { BILLING_CONFIG, CREDITS_PER_DOLLAR, PACK_DOLLARS, PLAN_CAPS } from './billing-config.js';
import type { DodoPart } from './wiring.js';

/** A customer of the embedded Dodo emulator and the API key that names it. */
export interface EmbeddedCustomer {
  apiKey: string;
  customerId: string;
}

/** The in-process Dodo emulator and the demo customer. */
export interface EmbeddedServices {
  emulator: DodoEmulator;
  creditEntitlementId: string;
  demo: EmbeddedCustomer;
  /**
   * Creates another customer, its API account open (subscribed to the usage plan, as the sign-up
   * checkout leaves it; `account: false` leaves it unopened), holding `dollars` of credits
   * (default none), with its own key.
   */
  addCustomer(input?: { dollars?: string; email?: string; account?: boolean }): EmbeddedCustomer;
}

/** Credits (cents) for an amount in dollars, as a decimal string. */
function creditsFor(dollars: string): string {
  const cents = (parseUsd(dollars, 'dollars') * BigInt(CREDITS_PER_DOLLAR)) / 10n ** 12n;
  return cents.toString();
}

/**
 * Sets the guide's billing up on the Dodo emulator with `express-llm-billing setup`'s own code —
 * a fiat credit entitlement, weighted input and output meters billed in it by the $0 usage plan,
 * the $5/$10/$50/$100 packs, Plus and Team — and signs a demo customer up (its API account opened
 * through the usage plan's checkout) holding $5.00 of credits.
 */
export async function bootEmbedded(): Promise<{ part: DodoPart; services: EmbeddedServices }> {
  const emulator = await createDodoEmulator();
  try {
    // The same setup the CLI runs against real Dodo: entitlement, meters, packs, plans.
    const { ids } = await applySetup(planSetup(BILLING_CONFIG), emulator.client());
    const credits = { id: ids.creditEntitlementId! };
    const usagePlanProductId = ids.usagePlanProductId!;
    const product = (key: string) => ids.products[key]!;
    const packs = new Map<string, string>(
      PACK_DOLLARS.map((dollars) => [dollars, product(`top-up-${dollars}`)]),
    );
    const plus = { product_id: product('plan-plus') };
    const team = { product_id: product('plan-team') };

    const apiKeys = new ApiKeys();
    /** Welcome credits and an API key for a customer whose account is open. */
    const welcome = (customerId: string, dollars: string): EmbeddedCustomer => {
      const amount = creditsFor(dollars);
      if (amount !== '0') emulator.addCredits(customerId, credits.id, amount, { reason: 'Welcome credits' });
      const apiKey = ApiKeys.generate();
      apiKeys.add(apiKey, customerId);
      return { apiKey, customerId };
    };
    let customers = 0;
    const addCustomer = (
      input: { dollars?: string; email?: string; account?: boolean } = {},
    ): EmbeddedCustomer => {
      customers += 1;
      const customer = emulator.createCustomer({
        email: input.email ?? `customer-${customers}@example.com`,
        name: `Customer ${customers}`,
      });
      // What the sign-up's checkout leaves behind: an on-demand subscription to the usage plan.
      if (input.account !== false) {
        emulator.subscribe(customer.customer_id, usagePlanProductId, { onDemand: 'mandate' });
      }
      return welcome(customer.customer_id, input.dollars ?? '0');
    };
    const demo = welcome(await signUp(emulator, usagePlanProductId), '5.00');

    const part: DodoPart = {
      kind: 'emulated',
      description: `the Dodo Payments emulator in this process, ${emulator.baseURL} (set DODO_PAYMENTS_API_KEY, … for real Dodo)`,
      dodo: emulator.client(),
      creditEntitlementId: credits.id,
      usagePlanProductId,
      webhookKey: emulator.webhookKey,
      apiKeys,
      packs,
      plans: {
        [plus.product_id]: { name: 'plus', ...PLAN_CAPS.plus },
        [team.product_id]: { name: 'team', ...PLAN_CAPS.team },
      },
      listening: (appUrl) => emulator.setWebhookUrl(`${appUrl}/webhooks/dodo`),
      close: () => emulator.close(),
    };
    return { part, services: { emulator, creditEntitlementId: credits.id, demo, addCustomer } };
  } catch (error) {
    await emulator.close();
    throw error;
  }
}

/**
 * The demo customer's sign-up, as a real one goes: the customer exists, its API account is opened
 * with the package's `createApiAccountCheckout`, and the customer completes that $0 checkout
 * (here the emulator's Pay button, pressed for them). Returns the customer's id.
 */
async function signUp(emulator: DodoEmulator, usagePlanProductId: string): Promise<string> {
  const customer = emulator.createCustomer({ email: 'demo@example.com', name: 'Demo customer' });
  const opened = await createApiAccountCheckout({
    dodo: emulator.client(),
    usagePlanProductId,
    customer: { customerId: customer.customer_id },
    returnUrl: 'http://localhost/',
  });
  if (opened.status === 'checkout') emulator.completeCheckout(opened.sessionId);
  return customer.customer_id;
}
