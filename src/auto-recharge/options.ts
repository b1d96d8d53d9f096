import { ConfigError } from '../errors.js';
import { formatUsd, type Money, parseUsd, UNITS_PER_DOLLAR } from '../money.js';
import type { AutoRechargeSettings } from '../store/types.js';

/** A recharge that ended (or never started), as the app's `on` callbacks receive it. */
export interface RechargeReport {
  customerId: string;
  /** The attempt's id: it travels to Dodo as the charge's `elb_recharge_attempt` metadata. */
  attemptId: string;
  /** What the recharge charges and credits, exact decimal USD. */
  amount: string;
  /** Dodo's payment, once the charge was accepted. */
  paymentId?: string;
  /** Why it did not succeed (Dodo's refusal, the payment's error, no saved payment method…). */
  reason?: string;
  /** Consecutive failures so far (0 after a success). */
  failures: number;
  /** Whether this failure disabled auto-recharge for the customer (until it is set again). */
  disabled: boolean;
}

/** A recharge the monthly limit stopped: reported once per customer and month. */
export interface RechargeLimitReport {
  customerId: string;
  /** What recharges charged this month, and the limit, exact decimal USD. */
  recharged: string;
  monthlyLimit: string;
  /** The recharge that was not made. */
  amount: string;
}

/** What the app hears about recharges; each callback's failure is logged, never a request's. */
export interface RechargeCallbacks {
  /** The charge succeeded and the credits were granted. */
  succeeded?: (report: RechargeReport) => void | Promise<void>;
  /** The charge was refused or declined (or the customer has no saved payment method). */
  failed?: (report: RechargeReport) => void | Promise<void>;
  /** The payment waits on the customer (e.g. card authentication): ask them to complete it. */
  requiresAction?: (report: RechargeReport) => void | Promise<void>;
  /** A recharge was due but would pass the customer's monthly limit: it was not made. */
  monthlyLimit?: (report: RechargeLimitReport) => void | Promise<void>;
}

/** `createBilling({ autoRecharge })`: how the package recharges customers who opted in. */
export interface AutoRechargeOptions {
  /**
   * The usage plan's product id (`setup` prints it as `usagePlanProductId`): a customer's
   * recharges charge the on-demand mandate of their subscription to it (their API account,
   * opened by `createApiAccountCheckout` with `saveCard`, the default).
   */
  usagePlanProductId: string;
  /** Consecutive failed (or `requires_action`) recharges that disable a customer's auto-recharge. @default 3 */
  maxFailures?: number;
  /**
   * How long an attempt holds the customer's recharge lock when its outcome stays unknown (the
   * process died, Dodo did not answer): then it is looked up on Dodo, never charged again
   * blindly. Keep it well above `dodoTimeoutMs`. @default 600_000
   */
  leaseMs?: number;
  /** Deadline of each Dodo call a recharge makes. @default 10_000 */
  dodoTimeoutMs?: number;
  /**
   * How long the recharge reads its payment's status before leaving the outcome to the
   * `payment.succeeded` / `payment.failed` webhook. @default 15_000
   */
  confirmWithinMs?: number;
  /** How long a customer's settings are cached in this process between store reads. @default 30_000 */
  settingsCacheMs?: number;
  /**
   * After a failed (or `requires_action`) recharge, how long this process waits before trying
   * that customer again, so a burst of requests does not spend `maxFailures` in a second.
   * @default 60_000
   */
  failurePauseMs?: number;
  /**
   * After a successful recharge, how long no other may start for the customer: a balance read
   * (in any process) just before the credits landed must not recharge again. @default 10_000
   */
  cooldownMs?: number;
  on?: RechargeCallbacks;
}

export interface ResolvedAutoRechargeOptions {
  usagePlanProductId: string;
  maxFailures: number;
  leaseMs: number;
  dodoTimeoutMs: number;
  confirmWithinMs: number;
  settingsCacheMs: number;
  failurePauseMs: number;
  cooldownMs: number;
  on: RechargeCallbacks;
}

const NAME = 'autoRecharge';

function positive(value: number | undefined, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new ConfigError(
      'ERR_ELB_INVALID_OPTION',
      `${NAME}: \`${name}\` must be a positive integer (got ${String(value)}).`,
    );
  }
  return value;
}

export function resolveAutoRechargeOptions(
  options: Readonly<AutoRechargeOptions>,
): ResolvedAutoRechargeOptions {
  if (typeof options?.usagePlanProductId !== 'string' || options.usagePlanProductId === '') {
    throw new ConfigError(
      'ERR_ELB_MISSING_OPTION',
      `${NAME}: \`usagePlanProductId\` is required — the usage plan \`express-llm-billing setup\` prints; recharges charge the on-demand mandate of the customer's subscription to it.`,
    );
  }
  const on = options.on ?? {};
  for (const [name, callback] of Object.entries(on)) {
    if (callback !== undefined && typeof callback !== 'function') {
      throw new ConfigError('ERR_ELB_INVALID_OPTION', `${NAME}: \`on.${name}\` must be a function.`);
    }
  }
  const dodoTimeoutMs = positive(options.dodoTimeoutMs, 'dodoTimeoutMs', 10_000);
  const leaseMs = positive(options.leaseMs, 'leaseMs', 600_000);
  if (leaseMs < 3 * dodoTimeoutMs) {
    throw new ConfigError(
      'ERR_ELB_INVALID_OPTION',
      `${NAME}: \`leaseMs\` (${leaseMs}) must be at least 3 × \`dodoTimeoutMs\` (${dodoTimeoutMs}): an attempt must end before another may look it up.`,
    );
  }
  return {
    usagePlanProductId: options.usagePlanProductId,
    maxFailures: positive(options.maxFailures, 'maxFailures', 3),
    leaseMs,
    dodoTimeoutMs,
    confirmWithinMs: positive(options.confirmWithinMs, 'confirmWithinMs', 15_000),
    settingsCacheMs: positive(options.settingsCacheMs, 'settingsCacheMs', 30_000),
    failurePauseMs: positive(options.failurePauseMs, 'failurePauseMs', 60_000),
    cooldownMs: positive(options.cooldownMs, 'cooldownMs', 10_000),
    on,
  };
}

/** A customer's auto-recharge as the app sets it: US dollars, as decimal strings (or exact numbers). */
export interface AutoRechargeInput {
  /** Recharge when the available balance falls below this. */
  threshold: string | number;
  /** What one recharge charges the saved payment method and credits (whole cents). */
  amount: string | number;
  /** What recharges may charge in one calendar month (UTC). */
  monthlyLimit: string | number;
}

/** A customer's auto-recharge and this month's state, exact decimal USD. */
export interface AutoRecharge {
  customerId: string;
  threshold: string;
  amount: string;
  monthlyLimit: string;
  /** The current month (`2026-11`, UTC) and what recharges charged in it. */
  month: string;
  recharged: string;
  /** Consecutive failed recharges, and whether they disabled it (until set again). */
  failures: number;
  disabled: boolean;
  /** A recharge is being made. */
  inFlight: boolean;
}

const CENT = UNITS_PER_DOLLAR / 100n;

/** Checks the app's input: bad input is a clear error and changes nothing. */
export function resolveAutoRechargeInput(input: AutoRechargeInput): AutoRechargeSettings {
  if (input === null || typeof input !== 'object') {
    throw new ConfigError(
      'ERR_ELB_INVALID_OPTION',
      'setAutoRecharge: give `{ threshold, amount, monthlyLimit }` in US dollars, or `undefined` to turn it off.',
    );
  }
  const threshold = parseUsd(input.threshold, 'threshold');
  const amount = parseUsd(input.amount, 'amount');
  const monthlyLimit = parseUsd(input.monthlyLimit, 'monthlyLimit');
  const fail = (message: string) => new ConfigError('ERR_ELB_INVALID_OPTION', `setAutoRecharge: ${message}`);
  if (threshold < 0n) throw fail('`threshold` must not be negative.');
  // Dodo charges whole minor units (cents).
  if (amount <= 0n || amount % CENT !== 0n)
    throw fail(`\`amount\` must be a positive whole number of cents (got ${formatUsd(amount)}).`);
  if (monthlyLimit < amount)
    throw fail(
      `\`monthlyLimit\` (${formatUsd(monthlyLimit)}) must be at least \`amount\` (${formatUsd(amount)}), or no recharge could ever be made.`,
    );
  return { threshold, amount, monthlyLimit };
}

/** Minor units (cents) of a whole-cent amount of money. */
export function centsOf(amount: Money): number {
  return Number(amount / CENT);
}
