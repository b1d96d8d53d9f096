import type { RequestHandler, Router } from 'express';
import { AutoRecharger } from './auto-recharge/index.js';
import {
  type AutoRecharge,
  type AutoRechargeInput,
  resolveAutoRechargeInput,
  resolveAutoRechargeOptions,
} from './auto-recharge/options.js';
import { RequestSettingsScope } from './chain/context.js';
import { type ChainContext, type ChainSteps, createChain } from './chain/index.js';
import { type DodoWebhooksOptions, dodoWebhooks } from './dodo-webhooks/index.js';
import { BillingError, ConfigError } from './errors.js';
import { Flushers } from './meter-usage/flushers.js';
import { flusherOptions, type MeterUsageMiddleware, withFlusherControls } from './meter-usage/index.js';
import { type MeterUsageOptions, resolveMeterUsageOptions } from './meter-usage/options.js';
import { MeterStep } from './meter-usage/step.js';
import { resolveObserver } from './metrics/observer.js';
import { formatUsd, parseUsd } from './money.js';
import {
  requireOption,
  resolveLogger,
  resolveStore,
  resolveUnitsPerCredit,
  type SharedOptions,
} from './options.js';
import { type ReconcileOptions, resolveReconcileOptions } from './reconcile/options.js';
import { type ReconcileReport, Reconciler } from './reconcile/reconciler.js';
import type { RequestSettingsOptions } from './request-settings.js';
import { type RequireCreditsOptions, resolveRequireCreditsOptions } from './require-credits/options.js';
import { CreditStep } from './require-credits/step.js';
import { resolveSoftCapRouterOptions, type SoftCapRouterOptions } from './soft-cap-router/options.js';
import { SoftCapStep } from './soft-cap-router/step.js';
import { readSpend, type SpendRange, type SpendReport } from './spend/index.js';
import { budgetPeriods } from './store/budget-period.js';
import type { BudgetLimits } from './store/types.js';
import { resolveTierRateLimitOptions, type TierRateLimitOptions } from './tier-rate-limit/options.js';
import { TierStep } from './tier-rate-limit/step.js';

/** Options of a middleware once the shared settings are bound: only its own are required. */
type Own<T> = Omit<T, keyof SharedOptions> & Partial<SharedOptions>;

/**
 * What `billing.chain()` runs, keyed by middleware: each takes that middleware's own options,
 * or `false` to leave it out. Credits and metering run unless `false`; tiers and soft caps run
 * when given.
 */
export interface ChainOptions {
  tierRateLimit?: Own<TierRateLimitOptions> | false;
  softCapRouter?: Own<SoftCapRouterOptions> | false;
  requireCredits?: Own<RequireCreditsOptions> | false;
  meterUsage?: Own<MeterUsageOptions> | false;
}

/** A budget as the app sets it: US dollars as decimal strings (or exact numbers). */
export interface BudgetInput {
  hard?: string | number;
  soft?: string | number;
  /** @default 'month' */
  period?: 'month' | 'day';
}

/** A key's budget and its current period, exact decimal USD. */
export interface Budget {
  key: string;
  period: 'month' | 'day';
  /** The current period: `2026-11` or `2026-11-30` (UTC). */
  periodId: string;
  spent: string;
  held: string;
  hard?: string;
  soft?: string;
  /** What the hard limit leaves, never below zero. */
  remaining?: string;
}

/** What `createBilling` takes: the shared settings, and the jobs it runs in the background. */
export interface BillingOptions extends SharedOptions {
  /**
   * Reconciliation: a background job that compares the balance views of recently active
   * customers with Dodo's balance and ledger, corrects drift that pending usage does not explain
   * and reports it (a warning with both figures, and `metrics`). Off unless given; `true` takes
   * the defaults. See docs/reconciliation.md.
   * @default undefined (off)
   * @example reconcile: { intervalMs: 60_000, maxDodoCallsPerMinute: 60 }
   */
  reconcile?: ReconcileOptions | boolean;
}

/** The five middlewares and the chain, with shared settings bound, and the usage flusher's controls. */
export interface Billing {
  /**
   * One Express handler that runs, for a request, the tier limit, the soft cap, the credit
   * reservation and the metering — one store round trip to admit, one to settle — wherever it
   * is mounted (`app.use`, a router, a route).
   * @example app.post('/v1/chat/completions', billing.chain({ tierRateLimit: { tiers: OPENAI_TIERS } }), proxy)
   */
  chain(options?: ChainOptions): MeterUsageMiddleware;
  requireCredits(options?: Own<RequireCreditsOptions>): RequestHandler;
  meterUsage(options?: Own<MeterUsageOptions>): MeterUsageMiddleware;
  tierRateLimit(options: Own<TierRateLimitOptions>): RequestHandler;
  softCapRouter(options: Own<SoftCapRouterOptions>): RequestHandler;
  dodoWebhooks(options?: Own<DodoWebhooksOptions>): Router;
  /**
   * Sets a budget on one of a customer's API keys (the key `budgetKey(req)` names): a `hard`
   * limit refuses the key's requests once its spend and holds reach it (402 `budget_exceeded`),
   * a `soft` one adds a header (and fires a budget alert); per calendar month (UTC) by default.
   * `undefined` removes it.
   * @example await billing.setBudget('cus_123', 'sk-dev', { hard: '1.00', soft: '0.80' })
   */
  setBudget(customerId: string, key: string, budget: BudgetInput | undefined): Promise<void>;
  /** A key's budget and what it spent (and holds) this period, exact decimal USD; `undefined` without one. */
  budget(customerId: string, key: string): Promise<Budget | undefined>;
  /**
   * Opts a customer in to auto-recharge (OpenAI's three fields, US dollars): when their available
   * balance falls below `threshold`, `amount` is charged on their saved payment method (their
   * API account's on-demand mandate) and credited, never more than `monthlyLimit` a calendar
   * month (UTC). Setting it again re-enables a customer that failures disabled; `undefined`
   * turns it off. Needs `createBilling({ autoRecharge })`.
   * @example await billing.setAutoRecharge('cus_123', { threshold: '5.00', amount: '20.00', monthlyLimit: '100.00' })
   */
  setAutoRecharge(customerId: string, settings: AutoRechargeInput | undefined): Promise<void>;
  /** A customer's auto-recharge and this month's recharges, exact decimal USD; `undefined` when off. */
  autoRecharge(customerId: string): Promise<AutoRecharge | undefined>;
  /**
   * A customer's spend by UTC day and by model, for the app's own dashboard: every day from
   * `from` to `to` (both included, at most 366), what the credits paid (exact decimal USD) and
   * the tokens, with the exact total. Read from the day counters each settlement adds.
   * @example const { total, days } = await billing.spend('cus_123', { from: '2026-11-01', to: '2026-11-30' })
   */
  spend(customerId: string, range: SpendRange): Promise<SpendReport>;
  /**
   * Runs one reconciliation round now — the recently active customers, or `customerIds` — with
   * the `reconcile` options (their defaults when the job is off), under the same budget of Dodo
   * calls as the background job. Resolves with what it checked and corrected.
   * @example const { corrections } = await billing.reconcile(['cus_123'])
   */
  reconcile(customerIds?: readonly string[]): Promise<ReconcileReport>;
  /** Resolves once every queued usage event has been accepted by Dodo, or rejects with why not. */
  flush(timeoutMs?: number): Promise<void>;
  /**
   * Stops the reconciliation job, flushes, then stops the flushers' timers (and the store's, not
   * an injected Redis client).
   */
  close(): Promise<void>;
}

/**
 * Binds the shared settings (`store`, `dodo`, `customerId`, `pricing`, …) once. Each
 * middleware still takes its own options; the per-request ones (`model`, `requestId`, the
 * estimator…) apply to the requests that middleware (or the chain holding it) bills, and must
 * agree with every other middleware billing the same request.
 *
 * @example
 * const billing = createBilling({ store, dodo, creditEntitlementId, customerId, pricing });
 * app.post('/v1/chat/completions', billing.chain(), handler);
 */
export function createBilling(options: Readonly<BillingOptions>): Billing {
  const { reconcile: reconcileOption, ...shared } = options;
  const scope = new RequestSettingsScope(shared);
  const store = resolveStore(shared, 'createBilling');
  const logger = resolveLogger(shared.logger);
  const metrics = resolveObserver(shared, logger, 'createBilling');
  const flushers = new Flushers();
  // Checked at startup when the job is on; built on first use by `billing.reconcile()` otherwise.
  if (
    reconcileOption !== undefined &&
    typeof reconcileOption !== 'boolean' &&
    (reconcileOption === null || typeof reconcileOption !== 'object')
  ) {
    throw new ConfigError(
      'ERR_ELB_INVALID_OPTION',
      `createBilling: \`reconcile\` must be \`true\` or an object such as { intervalMs: 60_000, maxDodoCallsPerMinute: 60 } (got ${describeValue(reconcileOption)}).`,
    );
  }
  const reconcileSettings = typeof reconcileOption === 'object' ? reconcileOption : {};
  let reconciler = reconcileOption
    ? new Reconciler(resolveReconcileOptions(shared, reconcileSettings, metrics))
    : undefined;
  let closed = false;
  const recharger = shared.autoRecharge
    ? new AutoRecharger(
        {
          store,
          dodo: requireOption(
            shared.dodo,
            'dodo',
            'autoRecharge',
            'a DodoPayments client, to charge recharges',
          ),
          creditEntitlementId: requireOption(
            shared.creditEntitlementId,
            'creditEntitlementId',
            'autoRecharge',
            'the credit entitlement recharges credit',
          ),
          perCredit: resolveUnitsPerCredit(shared.creditsPerDollar),
          logger,
          metrics,
        },
        resolveAutoRechargeOptions(shared.autoRecharge),
      )
    : undefined;
  const steps = {
    tierRateLimit: (options: Own<TierRateLimitOptions>) =>
      new TierStep(resolveTierRateLimitOptions({ ...shared, ...options } as TierRateLimitOptions)),
    softCapRouter: (options: Own<SoftCapRouterOptions>) =>
      new SoftCapStep(resolveSoftCapRouterOptions({ ...shared, ...options } as SoftCapRouterOptions)),
    requireCredits: (options: Own<RequireCreditsOptions> | undefined) =>
      new CreditStep(resolveRequireCreditsOptions({ ...shared, ...options } as RequireCreditsOptions)),
    meterUsage: (options: Own<MeterUsageOptions> | undefined) => {
      const config = resolveMeterUsageOptions({ ...shared, ...options } as MeterUsageOptions);
      return new MeterStep(config, flushers.for(flusherOptions(config)), recharger);
    },
  };
  /** A chain of these steps, its per-request settings resolved from their options now. */
  const chainOf = (
    chainSteps: ChainSteps,
    options: Partial<Record<keyof ChainSteps, object | undefined>>,
    name: string,
  ): RequestHandler => {
    const parts = Object.entries(options)
      .filter(([step]) => chainSteps[step as keyof ChainSteps] !== undefined)
      .map(([middleware, own]) => ({ options: (own ?? {}) as RequestSettingsOptions, middleware }));
    const context: ChainContext = { settings: scope.forChain(parts), store, logger, metrics, recharger };
    return createChain(context, chainSteps, name);
  };
  // Without a route mounting metering yet, `flush` still delivers the store's outbox.
  const ensureFlusher = () => {
    steps.meterUsage(undefined);
  };
  reconciler?.start();
  return {
    chain: (options = {}) => {
      const own = {
        tierRateLimit: options.tierRateLimit || undefined,
        softCapRouter: options.softCapRouter || undefined,
        requireCredits: options.requireCredits === false ? undefined : (options.requireCredits ?? {}),
        meterUsage: options.meterUsage === false ? undefined : (options.meterUsage ?? {}),
      };
      const chainSteps: ChainSteps = {
        tierRateLimit: own.tierRateLimit && steps.tierRateLimit(own.tierRateLimit),
        softCapRouter: own.softCapRouter && steps.softCapRouter(own.softCapRouter),
        requireCredits: own.requireCredits && steps.requireCredits(own.requireCredits),
        meterUsage: own.meterUsage && steps.meterUsage(own.meterUsage),
      };
      return withFlusherControls(chainOf(chainSteps, own, 'billingChain'), flushers);
    },
    requireCredits: (options) =>
      chainOf(
        { requireCredits: steps.requireCredits(options) },
        { requireCredits: options },
        'requireCredits',
      ),
    meterUsage: (options) =>
      withFlusherControls(
        chainOf({ meterUsage: steps.meterUsage(options) }, { meterUsage: options }, 'meterUsage'),
        flushers,
      ),
    tierRateLimit: (options) =>
      chainOf({ tierRateLimit: steps.tierRateLimit(options) }, { tierRateLimit: options }, 'tierRateLimit'),
    softCapRouter: (options) =>
      chainOf({ softCapRouter: steps.softCapRouter(options) }, { softCapRouter: options }, 'softCapRouter'),
    dodoWebhooks: (options = {}) => dodoWebhooks({ ...shared, ...options, recharger } as DodoWebhooksOptions),
    setAutoRecharge: async (customerId, input) => {
      if (!recharger) {
        throw new ConfigError(
          'ERR_ELB_MISSING_OPTION',
          'setAutoRecharge: auto-recharge is not configured — pass `autoRecharge: { usagePlanProductId }` to createBilling.',
        );
      }
      if (typeof customerId !== 'string' || customerId === '') {
        throw new ConfigError(
          'ERR_ELB_INVALID_OPTION',
          'setAutoRecharge: `customerId` must be a non-empty string.',
        );
      }
      const settings = input === undefined ? undefined : resolveAutoRechargeInput(input);
      await store.setAutoRecharge(customerId, settings);
      recharger.forget(customerId);
    },
    autoRecharge: async (customerId) => {
      const month = budgetPeriods(store.now()).month;
      const state = await store.getAutoRecharge(customerId, month);
      if (!state) return undefined;
      return {
        customerId,
        threshold: formatUsd(state.threshold),
        amount: formatUsd(state.amount),
        monthlyLimit: formatUsd(state.monthlyLimit),
        month,
        recharged: formatUsd(state.recharged),
        failures: state.failures,
        disabled: state.disabled,
        inFlight: state.inFlight !== undefined && state.inFlight.leaseUntil > store.now(),
      };
    },
    setBudget: (customerId, key, budget) => store.setBudget(customerId, key, budget && resolveBudget(budget)),
    budget: async (customerId, key) => {
      const view = await store.getBudget(customerId, key, budgetPeriods(store.now()));
      if (!view) return undefined;
      const left = view.hard === undefined ? undefined : view.hard - view.spent - view.held;
      return {
        key,
        period: view.period,
        periodId: view.periodId,
        spent: formatUsd(view.spent),
        held: formatUsd(view.held),
        ...(view.hard === undefined ? {} : { hard: formatUsd(view.hard) }),
        ...(view.soft === undefined ? {} : { soft: formatUsd(view.soft) }),
        ...(left === undefined ? {} : { remaining: formatUsd(left > 0n ? left : 0n) }),
      };
    },
    spend: (customerId, range) => readSpend(store, customerId, range),
    reconcile: async (customerIds) => {
      if (closed) throw new BillingError('ERR_ELB_CLOSED', 'reconcile: this billing was closed.');
      if (
        customerIds !== undefined &&
        !(Array.isArray(customerIds) && customerIds.every((id) => typeof id === 'string'))
      ) {
        throw new BillingError(
          'ERR_ELB_INVALID_CUSTOMER_IDS',
          `reconcile: \`customerIds\` must be an array of Dodo customer ids (strings), or omitted for the recently active customers (got ${describeValue(customerIds)}).`,
          { status: 400 },
        );
      }
      reconciler ??= new Reconciler(resolveReconcileOptions(shared, reconcileSettings, metrics));
      return reconciler.run(customerIds);
    },
    flush: async (timeoutMs) => {
      ensureFlusher();
      await flushers.flush(timeoutMs);
    },
    close: async () => {
      closed = true;
      try {
        await reconciler?.close();
        await recharger?.idle();
        await flushers.close();
      } finally {
        await shared.store.close();
      }
    },
  };
}

function resolveBudget(budget: BudgetInput): BudgetLimits {
  const period = budget.period ?? 'month';
  if (period !== 'month' && period !== 'day') {
    throw new ConfigError(
      'ERR_ELB_INVALID_OPTION',
      `setBudget: \`period\` must be 'month' or 'day' (got ${String(period)}).`,
    );
  }
  const limits: BudgetLimits = { period };
  if (budget.hard !== undefined) limits.hard = parseUsd(budget.hard, 'hard');
  if (budget.soft !== undefined) limits.soft = parseUsd(budget.soft, 'soft');
  return limits;
}

/** A value as an error message shows it. */
function describeValue(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (Array.isArray(value)) return 'an array with a non-string entry';
  return value === null ? 'null' : typeof value === 'object' ? 'an object' : String(value);
}
