import { readFileSync } from 'node:fs';
import { parseUsd } from '../../src/index.js';

/** A setting is missing or wrong: the message names the environment variable and the fix. */
export class ExampleConfigError extends Error {
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(`${variable}: ${message}`);
    this.name = 'ExampleConfigError';
  }
}

/** Real Dodo Payments, from Dodo's own variables. */
export interface RealDodoConfig {
  apiKey: string;
  environment: 'test_mode' | 'live_mode';
  creditEntitlementId: string;
  /** The $0 usage plan each customer's API account subscribes to (`setup`'s `usagePlanProductId`). */
  usagePlanProductId: string;
  webhookKey: string;
  /** Pack price in dollars (`"5"`) → the Dodo product that sells it. */
  packs: Record<string, string>;
  /** Subscription product ids of the plans with soft caps, when sold. */
  plusProductId: string | undefined;
  teamProductId: string | undefined;
  /** API key → Dodo customer id (`API_KEYS` or `API_KEYS_FILE`). */
  apiKeys: Record<string, string>;
}

/** A real OpenAI-compatible upstream. */
export interface UpstreamConfig {
  apiKey: string;
  /** `OPENAI_BASE_URL`; default the `openai` client's own (api.openai.com). */
  baseURL: string | undefined;
}

/**
 * What the proxy runs on. Each part is real when its variables are set and stands in otherwise,
 * so `npm start` runs with no keys at all and uses what the environment already has.
 */
export interface ExampleConfig {
  /** `PORT`, default 3000 (0: any free port). */
  port: number;
  /** `HOST`, default: every interface. */
  host: string | undefined;
  /** `PUBLIC_URL`: where Dodo's checkout sends the customer back; default the request's origin. */
  publicUrl: string | undefined;
  /** Real Dodo (`DODO_PAYMENTS_API_KEY`, …); `undefined`: the in-process Dodo emulator, with a demo customer. */
  dodo: RealDodoConfig | undefined;
  /** A real upstream (`OPENAI_API_KEY`, `OPENAI_BASE_URL`); `undefined`: the mock LLM. */
  upstream: UpstreamConfig | undefined;
  /** `REDIS_URL`; `undefined`: a memory store. */
  redisUrl: string | undefined;
  /** Variables that are set but not used, each with why: printed at startup. */
  ignored: string[];
}

/** What real Dodo needs, every one of them (plus `API_KEYS` or `API_KEYS_FILE`). */
const REQUIRED_DODO_VARIABLES = [
  'DODO_PAYMENTS_API_KEY',
  'DODO_PAYMENTS_ENVIRONMENT',
  'DODO_CREDIT_ENTITLEMENT_ID',
  'DODO_USAGE_PLAN_PRODUCT_ID',
  'DODO_PAYMENTS_WEBHOOK_KEY',
  'DODO_CREDIT_PACKS',
] as const;

/** Dodo's own variables: setting any of them switches to real Dodo, which needs all the required ones. */
const DODO_VARIABLES = [...REQUIRED_DODO_VARIABLES, 'DODO_PLUS_PRODUCT_ID', 'DODO_TEAM_PRODUCT_ID'] as const;

type Env = Readonly<Record<string, string | undefined>>;

function value(env: Env, name: string): string | undefined {
  const text = env[name]?.trim();
  return text === undefined || text === '' ? undefined : text;
}

function port(env: Env): number {
  const text = value(env, 'PORT');
  if (text === undefined) return 3000;
  const number = Number(text);
  if (!/^\d+$/.test(text) || number > 65_535) {
    throw new ExampleConfigError(
      'PORT',
      `must be a port number from 0 to 65535 (got ${JSON.stringify(text)}).`,
    );
  }
  return number;
}

function publicUrl(env: Env): string | undefined {
  const text = value(env, 'PUBLIC_URL');
  if (text === undefined) return undefined;
  if (!URL.canParse(text) || !/^https?:$/.test(new URL(text).protocol)) {
    throw new ExampleConfigError(
      'PUBLIC_URL',
      `must be an absolute http(s) URL (got ${JSON.stringify(text)}).`,
    );
  }
  return text.replace(/\/+$/, '');
}

function jsonObject(text: string, variable: string, example: string): Record<string, string> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new ExampleConfigError(variable, `is not JSON (${(error as Error).message}); expected ${example}.`);
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new ExampleConfigError(variable, `must be a JSON object such as ${example}.`);
  }
  const entries = Object.entries(parsed);
  if (entries.length === 0) throw new ExampleConfigError(variable, `is empty; expected ${example}.`);
  for (const [key, id] of entries) {
    if (typeof id !== 'string' || id === '') {
      throw new ExampleConfigError(variable, `${JSON.stringify(key)} must map to a non-empty string id.`);
    }
  }
  return parsed as Record<string, string>;
}

function apiKeys(env: Env): Record<string, string> {
  const inline = value(env, 'API_KEYS');
  const file = value(env, 'API_KEYS_FILE');
  const example = '{"sk-…": "cus_…"}';
  if (inline !== undefined && file !== undefined) {
    throw new ExampleConfigError('API_KEYS_FILE', 'set either API_KEYS or API_KEYS_FILE, not both.');
  }
  if (file !== undefined) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (error) {
      throw new ExampleConfigError('API_KEYS_FILE', `cannot be read: ${(error as Error).message}`);
    }
    return jsonObject(text, 'API_KEYS_FILE', example);
  }
  return jsonObject(inline!, 'API_KEYS', example);
}

function packs(text: string): Record<string, string> {
  const parsed = jsonObject(text, 'DODO_CREDIT_PACKS', '{"5": "pdt_…", "10": "pdt_…"}');
  for (const dollars of Object.keys(parsed)) {
    try {
      if (parseUsd(dollars, 'DODO_CREDIT_PACKS') <= 0n) throw new Error('not positive');
    } catch {
      throw new ExampleConfigError(
        'DODO_CREDIT_PACKS',
        `keys are pack prices in US dollars such as "5" (got ${JSON.stringify(dollars)}).`,
      );
    }
  }
  return parsed;
}

function redisUrl(env: Env): string | undefined {
  const url = value(env, 'REDIS_URL');
  if (url !== undefined && (!URL.canParse(url) || !/^rediss?:$/.test(new URL(url).protocol))) {
    throw new ExampleConfigError('REDIS_URL', 'must be a redis:// or rediss:// URL.');
  }
  return url;
}

function upstream(env: Env, ignored: string[]): UpstreamConfig | undefined {
  const apiKey = value(env, 'OPENAI_API_KEY');
  const baseURL = value(env, 'OPENAI_BASE_URL');
  if (apiKey === undefined) {
    if (baseURL !== undefined) {
      ignored.push('OPENAI_BASE_URL (the mock LLM answers: set OPENAI_API_KEY too to forward to it)');
    }
    return undefined;
  }
  if (baseURL !== undefined && !URL.canParse(baseURL)) {
    throw new ExampleConfigError(
      'OPENAI_BASE_URL',
      'must be an absolute URL such as https://api.openai.com/v1.',
    );
  }
  return { apiKey, baseURL };
}

function realDodo(env: Env, ignored: string[]): RealDodoConfig | undefined {
  const present = DODO_VARIABLES.filter((name) => value(env, name) !== undefined);
  if (present.length === 0) {
    for (const name of ['API_KEYS', 'API_KEYS_FILE']) {
      if (value(env, name) !== undefined) {
        ignored.push(`${name} (it names customers of real Dodo: set DODO_PAYMENTS_API_KEY, … to use it)`);
      }
    }
    return undefined;
  }
  const missing: string[] = REQUIRED_DODO_VARIABLES.filter((name) => value(env, name) === undefined);
  if (value(env, 'API_KEYS') === undefined && value(env, 'API_KEYS_FILE') === undefined) {
    missing.push('API_KEYS');
  }
  if (missing.length > 0) {
    throw new ExampleConfigError(
      missing[0]!,
      `is missing. ${present.join(', ')} ${present.length === 1 ? 'is' : 'are'} set, so the proxy runs against real Dodo Payments and needs ${missing.join(', ')} too (API_KEYS may be given as API_KEYS_FILE). Unset every DODO_ variable to run on the Dodo emulator.`,
    );
  }
  const environment = value(env, 'DODO_PAYMENTS_ENVIRONMENT')!;
  if (environment !== 'test_mode' && environment !== 'live_mode') {
    throw new ExampleConfigError(
      'DODO_PAYMENTS_ENVIRONMENT',
      `must be test_mode or live_mode (got ${JSON.stringify(environment)}).`,
    );
  }
  const webhookKey = value(env, 'DODO_PAYMENTS_WEBHOOK_KEY')!;
  if (!/^(whsec_)?[A-Za-z0-9+/]+={0,2}$/.test(webhookKey)) {
    throw new ExampleConfigError(
      'DODO_PAYMENTS_WEBHOOK_KEY',
      "must be the webhook secret from Dodo's dashboard (whsec_ followed by base64).",
    );
  }
  return {
    apiKey: value(env, 'DODO_PAYMENTS_API_KEY')!,
    environment,
    creditEntitlementId: value(env, 'DODO_CREDIT_ENTITLEMENT_ID')!,
    usagePlanProductId: value(env, 'DODO_USAGE_PLAN_PRODUCT_ID')!,
    webhookKey,
    packs: packs(value(env, 'DODO_CREDIT_PACKS')!),
    plusProductId: value(env, 'DODO_PLUS_PRODUCT_ID'),
    teamProductId: value(env, 'DODO_TEAM_PRODUCT_ID'),
    apiKeys: apiKeys(env),
  };
}

/**
 * Reads the environment. Each part is chosen on its own: real Dodo only with Dodo's own
 * variables (`DODO_PAYMENTS_API_KEY`, …, all of them then), else the emulator and a demo
 * customer; a real upstream with `OPENAI_API_KEY`, else the mock LLM; Redis with `REDIS_URL`,
 * else a memory store. Live Dodo needs a real upstream and Redis (real money: no mock answers, no
 * usage lost with the process). A missing or inconsistent variable throws naming it.
 */
export function loadConfig(env: Env = process.env): ExampleConfig {
  const ignored: string[] = [];
  const config: ExampleConfig = {
    port: port(env),
    host: value(env, 'HOST'),
    publicUrl: publicUrl(env),
    redisUrl: redisUrl(env),
    upstream: upstream(env, ignored),
    dodo: realDodo(env, ignored),
    ignored,
  };
  if (config.dodo?.environment === 'live_mode') {
    if (!config.upstream) {
      throw new ExampleConfigError(
        'OPENAI_API_KEY',
        'is missing. DODO_PAYMENTS_ENVIRONMENT is live_mode, where customers pay real money: set OPENAI_API_KEY so they get real answers, not the mock LLM.',
      );
    }
    if (!config.redisUrl) {
      throw new ExampleConfigError(
        'REDIS_URL',
        'is missing. DODO_PAYMENTS_ENVIRONMENT is live_mode: set REDIS_URL so that usage not yet sent to Dodo survives a restart.',
      );
    }
  }
  return config;
}
