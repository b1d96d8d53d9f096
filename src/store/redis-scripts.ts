import type { Cluster, Redis } from 'ioredis';
import ackOutbox from './scripts/ack-outbox.lua';
import addUsage from './scripts/add-usage.lua';
import adjustBalance from './scripts/adjust-balance.lua';
import admit from './scripts/admit.lua';
import bignum from './scripts/bignum.lua';
import claimOutbox from './scripts/claim-outbox.lua';
import claimWebhook from './scripts/claim-webhook.lua';
import confirmDeducted from './scripts/confirm-deducted.lua';
import customer from './scripts/customer.lua';
import customerProfile from './scripts/customer-profile.lua';
import deadLetterOutbox from './scripts/dead-letter-outbox.lua';
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
import release from './scripts/release.lua';
import releaseAbandoned from './scripts/release-abandoned.lua';
import releaseWebhook from './scripts/release-webhook.lua';
import releaseWebhookClaim from './scripts/release-webhook-claim.lua';
import reserve from './scripts/reserve.lua';
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
  admit: { libraries: [bignum, customer, subscriptions], body: admit, keys: 8 },
  setBudget: { libraries: [], body: setBudget, keys: 1 },
  getBudget: { libraries: [bignum], body: getBudget, keys: 3 },
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

/** A script as ioredis exposes it once defined: a method that runs EVALSHA, or EVAL on NOSCRIPT. */
export type ScriptCommand = (...args: ScriptArgument[]) => Promise<unknown>;

/** The full Lua source of a script, libraries included (for tests and debugging). */
export function scriptSource(name: ScriptName): string {
  const { libraries, body } = SCRIPTS[name];
  return [...libraries, body].join('\n');
}

/** ioredis command name of a script; namespaced, since the client may be shared. */
function commandName(name: ScriptName): string {
  return `elb_${name}`;
}

/**
 * Registers every script on the client with ioredis `defineCommand`, which sends EVALSHA and
 * falls back to EVAL only on a NOSCRIPT reply (after a restart or `SCRIPT FLUSH`). Returns the
 * commands by name.
 */
export function defineScripts(client: Redis | Cluster): Record<ScriptName, ScriptCommand> {
  const commands = {} as Record<ScriptName, ScriptCommand>;
  const methods = client as unknown as Record<string, ScriptCommand>;
  for (const name of Object.keys(SCRIPTS) as ScriptName[]) {
    const definition: ScriptDefinition = SCRIPTS[name];
    const command = commandName(name);
    client.defineCommand(command, {
      lua: scriptSource(name),
      ...(definition.keys === undefined ? {} : { numberOfKeys: definition.keys }),
    });
    commands[name] = (...args) => methods[command]!(...args);
  }
  return commands;
}
