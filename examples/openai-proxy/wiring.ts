import type DodoPayments from 'dodopayments';
import type OpenAI from 'openai';
import type { BillingStore, SoftCapPlan } from '../../src/index.js';
import type { ApiKeys } from './api-keys.js';
import type { PlanName } from './billing-config.js';

/** What the app is built from. Only this differs between embedded and real mode. */
export interface Wiring {
  mode: 'embedded' | 'real';
  store: BillingStore;
  dodo: DodoPayments;
  creditEntitlementId: string;
  webhookKey: string;
  /** The upstream LLM, an OpenAI-compatible API. */
  openai: OpenAI;
  apiKeys: ApiKeys;
  /** Pack price in dollars (`"5"`) → the Dodo product that sells it. */
  packs: ReadonlyMap<string, string>;
  /** Subscription product id → its plan's soft caps. */
  plans: Readonly<Record<string, SoftCapPlan & { name: PlanName }>>;
  /** Where checkout returns the customer; default the request's origin. */
  publicUrl: string | undefined;
  /** Called once the app listens (embedded mode points the emulator's webhooks at it). */
  listening(appUrl: string): void;
  /** Stops what the wiring started (not the app's billing). */
  close(): Promise<void>;
}
