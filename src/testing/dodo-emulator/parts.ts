import type { Catalog } from './catalog.js';
import type { Checkouts } from './checkout.js';
import type { CreditLedger } from './credits.js';
import type { Disputes } from './disputes.js';
import type { EventStore } from './events.js';
import type { Meters } from './meters.js';
import type { Payments } from './payments.js';
import type { Runtime } from './runtime.js';
import type { Subscriptions } from './subscriptions.js';
import type { WebhookSender } from './webhooks.js';

/** The emulator's parts, as routes and admin methods reach them. */
export interface Parts {
  runtime: Runtime;
  catalog: Catalog;
  credits: CreditLedger;
  events: EventStore;
  meters: Meters;
  payments: Payments;
  subscriptions: Subscriptions;
  checkouts: Checkouts;
  disputes: Disputes;
  webhooks: WebhookSender;
}
