import { createRequire } from 'node:module';
import type { RequestHandler } from 'express';
import type * as PromClient from 'prom-client';
import { ConfigError } from '../errors.js';
import { formatUsd, type Money } from '../money.js';
import type { BillingObserver, ObservedStore } from './observer.js';

type Client = typeof PromClient;
type Registry = PromClient.Registry;

/** Options of {@link prometheusMetrics}. */
export interface PrometheusMetricsOptions {
  /**
   * The `prom-client` module, when the app wants to pass its own copy.
   * @default `require('prom-client')`, loaded when `prometheusMetrics()` is called (an optional peer)
   */
  client?: Client;
  /**
   * Where the metrics are registered. A metric of the same name already there (a second
   * `prometheusMetrics()` on one registry) is reused, not registered twice.
   * @default the client's default registry (`client.register`)
   */
  registry?: Registry;
  /** Prefix of every metric name. @default 'llm_billing_' */
  prefix?: string;
}

/** The observer for Prometheus, and what a `/metrics` route needs. */
export interface PrometheusMetrics extends Required<BillingObserver> {
  /** The registry the metrics live in. */
  readonly registry: Registry;
  /** The exposition format's content type, for the `/metrics` answer. */
  readonly contentType: string;
  /** The exposition text of the registry (every metric in it, the app's own included). */
  metrics(): Promise<string>;
  /** An Express handler answering the exposition text: `app.get('/metrics', metrics.handler())`. */
  handler(): RequestHandler;
}

const PREFIX = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
/** Label values from our own codes and Dodo's event types; anything else is `other`. */
const CODE = /^[a-zA-Z][a-zA-Z0-9_.]{0,63}$/;

/**
 * Loads the optional peer as this package's own code would import it (the CommonJS build gets
 * `import.meta.url` from tsup's shims), only when `prometheusMetrics()` is called.
 */
function loadClient(): Client {
  try {
    return createRequire(import.meta.url)('prom-client') as Client;
  } catch (error) {
    throw new ConfigError(
      'ERR_ELB_MISSING_PEER',
      `prometheusMetrics: the optional peer dependency \`prom-client\` is not installed — run \`npm install prom-client\`, or pass its module as \`client\`. (${(error as Error).message})`,
    );
  }
}

/**
 * The one conversion of money for metrics: the exact decimal USD string, read as the nearest
 * double. Prometheus values are doubles; exact figures are `billing.spend` and the store's.
 */
export function usdForMetrics(amount: Money): number {
  return Number(formatUsd(amount));
}

/** What the observers of one registry and prefix share: their metrics read the same stores. */
const shared = new WeakMap<Registry, Map<string, { stores: Set<ObservedStore>; models: Set<string> }>>();

function sharedState(registry: Registry, prefix: string) {
  let byPrefix = shared.get(registry);
  if (!byPrefix) {
    byPrefix = new Map();
    shared.set(registry, byPrefix);
  }
  let state = byPrefix.get(prefix);
  if (!state) {
    state = { stores: new Set(), models: new Set() };
    byPrefix.set(prefix, state);
  }
  return state;
}

interface OutboxFigures {
  waiting: number;
  leased: number;
  dead: number;
  oldestAgeMs: number;
}

/** The outboxes of the attached stores, added up; `undefined` when none could be read. */
async function outboxFigures(stores: ReadonlySet<ObservedStore>): Promise<OutboxFigures | undefined> {
  const reads = await Promise.allSettled(
    [...stores].map(async (store) => ({ store, stats: await store.outboxStats() })),
  );
  let figures: OutboxFigures | undefined;
  for (const read of reads) {
    if (read.status !== 'fulfilled') continue;
    const { store, stats } = read.value;
    figures ??= { waiting: 0, leased: 0, dead: 0, oldestAgeMs: 0 };
    figures.waiting += stats.waiting;
    figures.leased += stats.leased;
    figures.dead += stats.dead;
    if (stats.oldestEnqueuedAt !== undefined)
      figures.oldestAgeMs = Math.max(figures.oldestAgeMs, store.now() - stats.oldestEnqueuedAt);
  }
  return figures;
}

const DODO_SECONDS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const VIEW_AGE_SECONDS = [1, 5, 15, 30, 60, 120, 300, 900, 3600];
const ESTIMATE_ERROR_USD = [-1, -0.1, -0.01, -0.001, -0.0001, 0, 0.0001, 0.001, 0.01, 0.1, 1];
const DRIFT_USD = [-100, -10, -1, -0.1, -0.01, 0, 0.01, 0.1, 1, 10, 100];

/**
 * Prometheus metrics of the billing middlewares, through `prom-client` (an optional peer):
 * pass the result as the `metrics` option and serve its registry. Names start with
 * `llm_billing_`; labels are bounded (no customer ids; `model` is a priced model or `other`).
 * Money is exported as US dollars (`*_usd`), converted once at this boundary from exact money.
 * docs/metrics.md lists every metric.
 *
 * @example
 * const metrics = prometheusMetrics();
 * const billing = createBilling({ ...options, metrics });
 * app.get('/metrics', metrics.handler());
 */
export function prometheusMetrics(options: Readonly<PrometheusMetricsOptions> = {}): PrometheusMetrics {
  const client = options.client ?? loadClient();
  const registry = options.registry ?? client.register;
  const prefix = options.prefix ?? 'llm_billing_';
  if (typeof prefix !== 'string' || !PREFIX.test(prefix)) {
    throw new ConfigError(
      'ERR_ELB_INVALID_OPTION',
      `prometheusMetrics: \`prefix\` must be a valid metric name prefix such as 'llm_billing_' (got ${String(prefix)}).`,
    );
  }
  const { stores, models } = sharedState(registry, prefix);

  /** A metric of this registry: the one already there under the name, or a new one. */
  function metric<M>(name: string, create: (config: { name: string; registers: Registry[] }) => M): M {
    const full = `${prefix}${name}`;
    return (registry.getSingleMetric(full) as M | undefined) ?? create({ name: full, registers: [registry] });
  }
  const counter = (name: string, help: string, labelNames: string[] = []) =>
    metric(name, (config) => new client.Counter({ ...config, help, labelNames }));
  const histogram = (name: string, help: string, buckets: number[], labelNames: string[] = []) =>
    metric(name, (config) => new client.Histogram({ ...config, help, buckets, labelNames }));

  const admitted = counter('requests_admitted_total', 'Requests the billing chain admitted.', ['model']);
  const refused = counter(
    'requests_refused_total',
    'Requests the billing chain answered itself, by the error code answered.',
    ['reason'],
  );
  const reserved = counter('reserved_usd_total', 'US dollars of credits held at admission.', ['model']);
  const settledUsd = counter('settled_usd_total', 'US dollars of credits settled (spent).', [
    'model',
    'estimated',
  ]);
  const settlements = counter('settlements_total', 'Settled requests, per model they used.', [
    'model',
    'estimated',
  ]);
  const estimateError = histogram(
    'estimate_error_usd',
    'Settled minus reserved, per request, in US dollars (negative: the hold was larger).',
    ESTIMATE_ERROR_USD,
    ['model'],
  );
  const viewAge = histogram(
    'balance_view_age_seconds',
    'Age of the balance view an admission decided on (since Dodo was last read).',
    VIEW_AGE_SECONDS,
  );
  const deadLetters = counter('dead_letters_total', 'Usage events Dodo refused, moved to the dead letters.');
  const webhooksApplied = counter('webhooks_applied_total', 'Verified Dodo webhooks applied.', ['type']);
  const webhooksRefused = counter(
    'webhooks_refused_total',
    'Webhook deliveries refused, failed or already applied, by reason.',
    ['reason'],
  );
  const dodoSeconds = histogram('dodo_call_duration_seconds', 'Duration of calls to Dodo.', DODO_SECONDS, [
    'operation',
    'outcome',
  ]);
  const dodoErrors = counter('dodo_call_errors_total', 'Calls to Dodo that failed.', ['operation', 'error']);
  const reconciliationChecks = counter(
    'reconciliation_checks_total',
    "Balance views the reconciliation job compared with Dodo's balance and ledger.",
  );
  const reconciliationCorrections = counter(
    'reconciliation_corrections_total',
    'Balance views the reconciliation job corrected (drift that pending usage did not explain).',
  );
  const reconciliationDrift = histogram(
    'reconciliation_drift_usd',
    'What each correction moved a balance view by, in US dollars (negative: the view was too high).',
    DRIFT_USD,
  );
  const recharges = counter('recharges_total', 'Auto-recharges, by outcome (monthly_limit: not made).', [
    'outcome',
  ]);
  const rechargedUsd = counter('recharged_usd_total', 'US dollars charged by successful auto-recharges.');

  // The outbox is read at scrape time, from every store attached: nothing on the hot path. Both
  // gauges share one read while it runs; a store that fails leaves the last values in place.
  let reading: Promise<OutboxFigures | undefined> | undefined;
  const readOutbox = () => {
    reading ??= outboxFigures(stores).finally(() => {
      reading = undefined;
    });
    return reading;
  };
  metric(
    'outbox_events',
    (config) =>
      new client.Gauge({
        ...config,
        help: 'Usage events in the outbox: waiting, leased to a flusher, or dead-lettered.',
        labelNames: ['state'],
        async collect() {
          const figures = await readOutbox();
          if (!figures) return;
          this.set({ state: 'waiting' }, figures.waiting);
          this.set({ state: 'leased' }, figures.leased);
          this.set({ state: 'dead' }, figures.dead);
        },
      }),
  );
  metric(
    'outbox_oldest_event_age_seconds',
    (config) =>
      new client.Gauge({
        ...config,
        help: 'Age of the oldest usage event still to deliver to Dodo (Dodo refuses events older than an hour).',
        async collect() {
          const figures = await readOutbox();
          if (figures) this.set(figures.oldestAgeMs / 1000);
        },
      }),
  );

  const modelLabel = (model: string | undefined) =>
    model !== undefined && models.has(model) ? model : 'other';
  const codeLabel = (code: string) => (CODE.test(code) ? code : 'other');

  return {
    registry,
    get contentType() {
      return registry.contentType;
    },
    metrics: () => registry.metrics(),
    handler() {
      return async function metricsHandler(_req, res, next) {
        try {
          const text = await registry.metrics();
          res.setHeader('content-type', registry.contentType);
          res.end(text);
        } catch (error) {
          next(error);
        }
      };
    },
    attach({ store, models: priced }) {
      stores.add(store);
      for (const model of priced) models.add(model);
    },
    admitted(model) {
      admitted.inc({ model: modelLabel(model) });
    },
    refused(reason) {
      refused.inc({ reason: codeLabel(reason) });
    },
    reserved(model, amount) {
      reserved.inc({ model: modelLabel(model) }, usdForMetrics(amount));
    },
    settled(model, amount, estimated) {
      const labels = { model: modelLabel(model), estimated: estimated ? 'true' : 'false' };
      settledUsd.inc(labels, usdForMetrics(amount));
      settlements.inc(labels);
    },
    estimateError(model, error) {
      estimateError.observe({ model: modelLabel(model) }, usdForMetrics(error));
    },
    balanceViewAge(ageMs) {
      viewAge.observe(ageMs / 1000);
    },
    deadLettered(count) {
      deadLetters.inc(count);
    },
    webhookApplied(type) {
      webhooksApplied.inc({ type: codeLabel(type) });
    },
    webhookRefused(reason) {
      webhooksRefused.inc({ reason: codeLabel(reason) });
    },
    dodoCall(operation, seconds, error) {
      const label = codeLabel(operation);
      dodoSeconds.observe({ operation: label, outcome: error === undefined ? 'ok' : 'error' }, seconds);
      if (error !== undefined) dodoErrors.inc({ operation: label, error: codeLabel(error) });
    },
    reconciled(drift) {
      reconciliationChecks.inc();
      if (drift === 0n) return;
      reconciliationCorrections.inc();
      reconciliationDrift.observe(usdForMetrics(drift));
    },
    recharge(outcome, amount) {
      recharges.inc({ outcome: codeLabel(outcome) });
      if (outcome === 'succeeded') rechargedUsd.inc(usdForMetrics(amount));
    },
  };
}
