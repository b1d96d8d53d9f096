import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll } from 'vitest';
import type { DodoEmulator } from '../../src/testing/index.js';
import { type BillingApp, type BillingAppOptions, startBillingApp, startDodo } from './billing-app.js';

type Dodo = Awaited<ReturnType<typeof startDodo>>;

/**
 * For a describe block: one Dodo emulator, and the apps its tests start on it. After each test
 * `reset` puts the emulator back (faults, webhook URL, charge outcomes: whatever the block
 * changes) and every app still tracked is closed; after the block, the emulator is closed. Call
 * it at the top of the block.
 */
export function appsOnEmulator(reset: (emulator: DodoEmulator) => void = () => {}) {
  let dodo: Dodo | undefined;
  // Changed in place only, so that a test file may hold on to it.
  const apps: BillingApp[] = [];
  beforeAll(async () => {
    dodo = await startDodo();
  });
  afterEach(async () => {
    if (dodo) reset(dodo.emulator);
    await Promise.all(apps.splice(0).map((app) => app.close()));
  });
  afterAll(async () => {
    await dodo?.emulator.close();
  });
  const started = () => {
    if (!dodo) throw new Error('appsOnEmulator: the emulator starts in beforeAll; use it inside a test');
    return dodo;
  };
  return {
    get dodo(): Dodo {
      return started();
    },
    /** The apps this test started or tracked, in order (the same array all along). */
    get apps(): readonly BillingApp[] {
      return apps;
    },
    /** `startBillingApp` on the emulator; the app is closed after the test. */
    async start(options: Omit<BillingAppOptions, 'emulator' | 'entitlementId'>): Promise<BillingApp> {
      const { emulator, entitlementId } = started();
      const app = await startBillingApp({ emulator, entitlementId, ...options });
      apps.push(app);
      return app;
    },
    /** Closes an app started elsewhere after the test too. */
    track(app: BillingApp): void {
      apps.push(app);
    },
    /** Stops closing an app (one the test crashed). */
    forget(app: BillingApp): void {
      const position = apps.indexOf(app);
      if (position >= 0) apps.splice(position, 1);
    },
    /** A new customer with an open API account holding `credits`. */
    customerWith(credits: string): string {
      const { customer, emulator, entitlementId } = started();
      const customerId = customer({ email: `${randomUUID()}@example.com` }).customer_id;
      emulator.setBalance(customerId, entitlementId, credits);
      return customerId;
    },
  };
}
