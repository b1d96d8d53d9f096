#!/usr/bin/env node
import { parseArgs } from 'node:util';
import DodoPayments from 'dodopayments';
import { BillingError } from './errors.js';
import { applySetup, SetupStepError, type Step } from './setup/apply.js';
import { loadBillingConfig } from './setup/config.js';
import { planSetup } from './setup/plan.js';
import { columnsFor, headerLine, plannedSteps, stepLine, summary, table } from './setup/report.js';

const USAGE = `Usage: express-llm-billing setup [options]

Creates or updates, idempotently, what the billing config needs on Dodo Payments: the fiat
credit entitlement, the meters, the $0 usage plan that bills them in credits at their exact
"meter units per credit" (each customer's API account is a subscription to it), the top-up
packs and the subscription plans. Re-running it changes nothing.

Options:
  --config <path>       billing config (default: billing.config.json or .mjs in the working directory)
  --dry-run             print the plan as a table and change nothing
  --api-key <key>       Dodo API key (default: $DODO_PAYMENTS_API_KEY)
  --environment <env>   test_mode or live_mode (default: $DODO_PAYMENTS_ENVIRONMENT, else test_mode)
  --base-url <url>      another API base URL, e.g. the emulator's (default: $DODO_PAYMENTS_BASE_URL)
  -h, --help            this help`;

type Out = (line: string) => void;

/** Runs the CLI; resolves with the exit code (0 done, 1 conflict or failure, 2 usage). */
async function main(
  argv: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
  out: Out = (line) => process.stdout.write(`${line}\n`),
  err: Out = (line) => process.stderr.write(`${line}\n`),
): Promise<number> {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(argv);
  } catch (error) {
    err(`${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    out(USAGE);
    return 0;
  }
  if (positionals[0] !== 'setup' || positionals.length > 1) {
    err(positionals.length === 0 ? USAGE : `Unknown command: ${positionals.join(' ')}\n\n${USAGE}`);
    return 2;
  }
  const environment = values.environment ?? env.DODO_PAYMENTS_ENVIRONMENT ?? 'test_mode';
  if (environment !== 'test_mode' && environment !== 'live_mode') {
    err(`--environment must be test_mode or live_mode (got ${environment}).`);
    return 2;
  }
  const apiKey = values['api-key'] ?? env.DODO_PAYMENTS_API_KEY;
  const baseURL = values['base-url'] ?? env.DODO_PAYMENTS_BASE_URL;

  let plan: ReturnType<typeof planSetup>;
  try {
    const { path, config } = await loadBillingConfig(values.config);
    plan = planSetup(config);
    const strategy =
      plan.strategy === 'weighted'
        ? `weighted meters (1 unit = $${plan.base} per 1M tokens)`
        : plan.strategy === 'per-model'
          ? 'per-model meters'
          : 'fixed meter names';
    out(`Config: ${path} — ${plan.creditsPerDollar} credits per USD, ${strategy}`);
  } catch (error) {
    err(`Config error: ${error instanceof Error ? error.message : String(error)}`);
    return 1;
  }

  if (!apiKey) {
    if (values['dry-run']) {
      out('No DODO_PAYMENTS_API_KEY: the plan alone, nothing read from Dodo.\n');
      out(table(plannedSteps(plan)));
      return 0;
    }
    err(
      'Set DODO_PAYMENTS_API_KEY (or pass --api-key) to set up Dodo; --dry-run prints the plan without it.',
    );
    return 2;
  }
  const target = baseURL ?? `Dodo Payments (${environment})`;
  out(`${values['dry-run'] ? 'Dry run against' : 'Setting up'} ${target}\n`);
  const dodo = new DodoPayments({
    bearerToken: apiKey,
    ...(baseURL ? { baseURL } : { environment, baseURL: null }),
    maxRetries: 2,
    timeout: 30_000,
  });

  const columns = columnsFor(plannedSteps(plan));
  columns.detail = Math.max(columns.detail, 24);
  out(headerLine(columns));
  const print = (step: Step) => out(stepLine(step, columns));
  try {
    const result = await applySetup(plan, dodo, { dryRun: values['dry-run'] ?? false, onStep: print });
    out('');
    if (!result.ok) {
      err(
        'Refused: existing objects conflict with the config (above); nothing was changed. Fix or rename them on Dodo, or change the config.',
      );
      return 1;
    }
    const changed = result.steps.some((step) => step.status !== 'unchanged');
    out(
      changed
        ? `Done: ${summary(result.steps)}.`
        : `Nothing to do: all ${result.steps.length} objects unchanged.`,
    );
    if (!values['dry-run'] && result.ids.creditEntitlementId) {
      out(`creditEntitlementId: ${result.ids.creditEntitlementId}`);
    }
    if (!values['dry-run'] && result.ids.usagePlanProductId) {
      out(
        `usagePlanProductId: ${result.ids.usagePlanProductId}  (open each customer's API account with createApiAccountCheckout: Dodo's meters deduct credits only from its subscribers)`,
      );
    }
    return 0;
  } catch (error) {
    if (error instanceof SetupStepError) {
      err(`Failed at ${error.step.object} ${error.step.key}: ${error.step.reason}`);
    } else {
      const message = error instanceof Error ? error.message : String(error);
      err(
        `Failed reading what exists on Dodo: ${message}${error instanceof BillingError ? ` (${error.code})` : ''}`,
      );
    }
    return 1;
  }
}

function parse(argv: readonly string[]) {
  return parseArgs({
    args: [...argv],
    allowPositionals: true,
    options: {
      config: { type: 'string' },
      'dry-run': { type: 'boolean' },
      'api-key': { type: 'string' },
      environment: { type: 'string' },
      'base-url': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exitCode = 1;
  },
);
