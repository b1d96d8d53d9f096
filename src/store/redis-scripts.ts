import { createHash } from 'node:crypto';
import ackOutbox from './scripts/ack-outbox.lua';
import addUsage from './scripts/add-usage.lua';
import adjustBalance from './scripts/adjust-balance.lua';
import admit from './scripts/admit.lua';
import beginRecharge from './scripts/begin-recharge.lua';
import bignum from './scripts/bignum.lua';
import claimOutbox from './scripts/claim-outbox.lua';
import claimWebhook from './scripts/claim-webhook.lua';
import confirmDeducted from './scripts/confirm-deducted.lua';
import customer from './scripts/customer.lua';
import customerProfile from './scripts/customer-profile.lua';
import deadLetterOutbox from './scripts/dead-letter-outbox.lua';
import finishRecharge from './scripts/finish-recharge.lua';
import getAutoRecharge from './scripts/get-auto-recharge.lua';
import getBalance from './scripts/get-balance.lua';
import getBudget from './scripts/get-budget.lua';
import listDeadLetters from './scripts/list-dead-letters.lua';
import markBalanceStale from './scripts/mark-balance-stale.lua';
import nackOutbox from './scripts/nack-outbox.lua';
import outbox from './scripts/outbox.lua';
import outboxStats from './scripts/outbox-stats.lua';
import peekOutbox from './scripts/peek-outbox.lua';
import putSubscription from './scripts/put-subscription.lua';
import recentCustomers from './scripts/recent-customers.lua';
import recordPayment from './scripts/record-payment.lua';
import recordRefund from './scripts/record-refund.lua';
import recordTopUp from './scripts/record-top-up.lua';
import release from './scripts/release.lua';
import releaseAbandoned from './scripts/release-abandoned.lua';
import releaseWebhook from './scripts/release-webhook.lua';
import releaseWebhookClaim from './scripts/release-webhook-claim.lua';
import reserve from './scripts/reserve.lua';
import setAutoRecharge from './scripts/set-auto-recharge.lua';
import setBudget from './scripts/set-budget.lua';
import settle from './scripts/settle.lua';
import subscriptions from './scripts/subscriptions.lua';
import syncBalance from './scripts/sync-balance.lua';
import unleaseOutbox from './scripts/unlease-outbox.lua';
import usage from './scripts/usage.lua';

interface ScriptDefinition {
  /** Library sources prepended, in order, to the script's own. */
  libraries: readonly string[];
  body: string;
  /** Fixed number of KEYS, or `undefined` when the caller passes the count first. */
  keys: number | undefined;
}

/**
 * Every script of RedisStore. Each one is a single atomic step of a store operation; the
 * libraries are plain Lua prepended at registration, so Redis sees one self-contained script.
 */
const SCRIPTS = {
  getBalance: { libraries: [bignum, customer], body: getBalance, keys: 3 },
  syncBalance: { libraries: [bignum, customer], body: syncBalance, keys: 3 },
  recentCustomers: { libraries: [], body: recentCustomers, keys: 1 },
  adjustBalance: { libraries: [bignum, customer], body: adjustBalance, keys: 4 },
  markBalanceStale: { libraries: [], body: markBalanceStale, keys: 1 },
  confirmDeducted: { libraries: [bignum, customer], body: confirmDeducted, keys: 2 },
  recordTopUp: { libraries: [], body: recordTopUp, keys: 1 },
  admit: { libraries: [bignum, customer, subscriptions], body: admit, keys: 8 },
  setBudget: { libraries: [], body: setBudget, keys: 1 },
  getBudget: { libraries: [bignum], body: getBudget, keys: 3 },
  setAutoRecharge: { libraries: [], body: setAutoRecharge, keys: 1 },
  getAutoRecharge: { libraries: [], body: getAutoRecharge, keys: 1 },
  beginRecharge: { libraries: [bignum], body: beginRecharge, keys: 1 },
  finishRecharge: { libraries: [bignum], body: finishRecharge, keys: 1 },
  reserve: { libraries: [bignum, customer], body: reserve, keys: 3 },
  release: { libraries: [bignum, customer], body: release, keys: 3 },
  releaseAbandoned: { libraries: [bignum, customer], body: releaseAbandoned, keys: 3 },
  settle: { libraries: [bignum, customer, outbox, usage], body: settle, keys: undefined },
  addUsage: { libraries: [bignum, usage], body: addUsage, keys: 1 },
  peekOutbox: { libraries: [outbox], body: peekOutbox, keys: 4 },
  claimOutbox: { libraries: [outbox], body: claimOutbox, keys: 5 },
  unleaseOutbox: { libraries: [outbox], body: unleaseOutbox, keys: 4 },
  ackOutbox: { libraries: [outbox], body: ackOutbox, keys: 6 },
  nackOutbox: { libraries: [outbox], body: nackOutbox, keys: 5 },
  deadLetterOutbox: { libraries: [outbox], body: deadLetterOutbox, keys: 8 },
  outboxStats: { libraries: [], body: outboxStats, keys: 8 },
  listDeadLetters: { libraries: [outbox], body: listDeadLetters, keys: 2 },
  recordPayment: { libraries: [bignum], body: recordPayment, keys: 2 },
  recordRefund: { libraries: [bignum], body: recordRefund, keys: 2 },
  claimWebhook: { libraries: [], body: claimWebhook, keys: 1 },
  releaseWebhook: { libraries: [], body: releaseWebhook, keys: 1 },
  releaseWebhookClaim: { libraries: [], body: releaseWebhookClaim, keys: 1 },
  putSubscription: { libraries: [], body: putSubscription, keys: 1 },
  customerProfile: { libraries: [subscriptions], body: customerProfile, keys: 2 },
} satisfies Record<string, ScriptDefinition>;

export type ScriptName = keyof typeof SCRIPTS;

/** Arguments of a script call: KEYS then ARGV (with the KEYS count first for variadic scripts). */
export type ScriptArgument = string | number;

/** A script of the store bound to one client: runs EVALSHA, or EVAL on NOSCRIPT. */
export type ScriptCommand = (...args: ScriptArgument[]) => Promise<unknown>;

/** The names of every script. */
export const SCRIPT_NAMES = Object.keys(SCRIPTS) as ScriptName[];

/** The full Lua source of a script, libraries included (for tests and debugging). */
export function scriptSource(name: ScriptName): string {
  const { libraries, body } = SCRIPTS[name];
  return [...libraries, body].join('\n');
}

/** Fixed number of KEYS of a script, or `undefined` when its caller passes the count first. */
export function scriptKeyCount(name: ScriptName): number | undefined {
  return (SCRIPTS[name] as ScriptDefinition).keys;
}

/** The SHA-1 EVALSHA names a script by. */
export function scriptSha(name: ScriptName): string {
  return createHash('sha1').update(scriptSource(name)).digest('hex');
}
