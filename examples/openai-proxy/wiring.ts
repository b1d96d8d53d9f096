import type DodoPayments from 'dodopayments';
import type OpenAI from 'openai';
import type { BillingStore, SoftCapPlan } from '../../src/index.js';
import type { ApiKeys } from './api-keys.js';
import type { PlanName } from './billing-config.js';

/** One part the proxy runs on, real or standing in, as the startup banner shows it. */
export interface PartDescription<Kind extends string> {
  kind: Kind;
  /** One line, without secrets: what it is and which variables chose it. */
  description: string;
}

/** Which parts are real and which stand in: each is chosen from the environment on its own. */
export interface Parts {
  dodo: PartDescription<'emulated' | 'real'>;
  upstream: PartDescription<'mock' | 'real'>;
  store: PartDescription<'memory' | 'redis'>;
}

/** Dodo's side: the emulator with a demo customer, or real Dodo Payments. */
export interface DodoPart extends PartDescription<'emulated' | 'real'> {
  dodo: DodoPayments;
  creditEntitlementId: string;
  /** The $0 usage plan each customer's API account subscribes to: Dodo's meters bill through it. */
  usagePlanProductId: string;
  webhookKey: string;
  apiKeys: ApiKeys;
  /** Pack price in dollars (`"5"`) → the Dodo product that sells it. */
  packs: ReadonlyMap<string, string>;
  /** Subscription product id → its plan's soft caps. */
  plans: Readonly<Record<string, SoftCapPlan & { name: PlanName }>>;
  /** Called once the app listens (the emulator sends its webhooks to it). */
  listening(appUrl: string): void;
  close(): Promise<void>;
}

/** What the app is built from: the same routes and middlewares whatever the parts are. */
export interface Wiring extends Omit<DodoPart, 'kind' | 'description' | 'close'> {
  parts: Parts;
  store: BillingStore;
  /** The upstream LLM, an OpenAI-compatible API. */
  openai: OpenAI;
  /** Where checkout returns the customer; default the request's origin. */
  publicUrl: string | undefined;
  /** Stops what the wiring started (not the app's billing). */
  close(): Promise<void>;
}
