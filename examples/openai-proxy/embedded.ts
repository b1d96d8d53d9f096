import { parseUsd } from '../../src/index.js';
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
  /** Creates another customer holding `dollars` of credits (default none), with its own key. */
  addCustomer(input?: { dollars?: string; email?: string }): EmbeddedCustomer;
}

/** Credits (cents) for an amount in dollars, as a decimal string. */
function creditsFor(dollars: string): string {
  const cents = (parseUsd(dollars, 'dollars') * BigInt(CREDITS_PER_DOLLAR)) / 10n ** 12n;
  return cents.toString();
}

/**
 * Sets the guide's billing up on the Dodo emulator with `express-llm-billing setup`'s own code —
 * a fiat credit entitlement, weighted input and output meters priced from the table, the
 * $5/$10/$50/$100 packs, Plus and Team — and creates a demo customer holding $5.00 of credits.
 */
export async function bootEmbedded(): Promise<{ part: DodoPart; services: EmbeddedServices }> {
  const emulator = await createDodoEmulator();
  try {
    // The same setup the CLI runs against real Dodo: entitlement, meters, packs, plans.
    const { ids } = await applySetup(planSetup(BILLING_CONFIG), emulator.client());
    const credits = { id: ids.creditEntitlementId! };
    const product = (key: string) => ids.products[key]!;
    const packs = new Map<string, string>(
      PACK_DOLLARS.map((dollars) => [dollars, product(`top-up-${dollars}`)]),
    );
    const plus = { product_id: product('plan-plus') };
    const team = { product_id: product('plan-team') };

    const apiKeys = new ApiKeys();
    let customers = 0;
    const addCustomer = (input: { dollars?: string; email?: string } = {}): EmbeddedCustomer => {
      customers += 1;
      const customer = emulator.createCustomer({
        email: input.email ?? `customer-${customers}@example.com`,
        name: customers === 1 ? 'Demo customer' : `Customer ${customers}`,
      });
      const amount = creditsFor(input.dollars ?? '0');
      if (amount !== '0')
        emulator.addCredits(customer.customer_id, credits.id, amount, { reason: 'Welcome credits' });
      const apiKey = ApiKeys.generate();
      apiKeys.add(apiKey, customer.customer_id);
      return { apiKey, customerId: customer.customer_id };
    };
    const demo = addCustomer({ dollars: '5.00', email: 'demo@example.com' });

    const part: DodoPart = {
      kind: 'emulated',
      description: `the Dodo Payments emulator in this process, ${emulator.baseURL} (set DODO_PAYMENTS_API_KEY, … for real Dodo)`,
      dodo: emulator.client(),
      creditEntitlementId: credits.id,
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
