import { currentBilling, enableRequestBillingContext, type RequestBilling } from '../billing-context.js';
import { ConfigError } from '../errors.js';
import { readOutputLimit } from '../estimate/index.js';
import { chatCompletions } from './chat.js';
import { type Endpoint, isRecord } from './endpoint.js';
import {
  type ResolvedTrackOpenAIOptions,
  resolveTrackOpenAIOptions,
  type TrackOpenAIOptions,
} from './options.js';
import { responses } from './responses.js';
import { isStream, tapStream } from './stream-tap.js';
import { type Owner, ownerOfNewCall, TrackedCall } from './tracked-call.js';

export type { TrackOpenAIOptions } from './options.js';
export { usageRecordOf } from './usage-record.js';

// biome-ignore lint/suspicious/noExplicitAny: the SDK's overloaded `create` methods are only called through.
type AnyCreate = (...args: any[]) => unknown;

/** The part of an `openai` client (v5, v6, v7) that `trackOpenAI` wraps. */
export interface OpenAIClientLike {
  chat: { completions: { create: AnyCreate } };
  responses?: { create: AnyCreate };
}

/** What the SDK's `APIPromise` offers: `_thenUnwrap` keeps the promise an `APIPromise`. */
interface SdkPromise extends PromiseLike<unknown> {
  _thenUnwrap?: (transform: (data: unknown) => unknown) => unknown;
  asResponse?: () => Promise<unknown>;
}

const trackedClients = new WeakSet<object>();

/**
 * The billing of the request whose handler is running now (entered by `requireCredits` or
 * `meterUsage`), or `undefined` outside any. Deep in a service layer, where `res` is out of
 * reach, it is how other LLM SDKs' usage is recorded. It needs the request context, which
 * `trackOpenAI` turns on; without a tracked client, call `enableRequestBillingContext()` once
 * at startup.
 * @example currentRequestBilling()?.record(usageRecordOf(model, message.usage))
 */
export function currentRequestBilling(): RequestBilling | undefined {
  return currentBilling.getStore();
}

/**
 * Bills the calls an `openai` client makes for the request in flight, so that a handler that
 * answers in its own shape (it calls OpenAI, post-processes, answers its own JSON) is billed
 * exactly what its calls used. Returns the same client, typed the same: only
 * `chat.completions.create` and `responses.create` are wrapped (and so the SDK helpers built on
 * them: `.parse()`, `.stream()`, `.runTools()`), and what they return is unchanged — the same
 * `APIPromise` (`.withResponse()` works), the same result, the same `Stream` class.
 *
 * Inside a request (after `requireCredits` or `meterUsage`, which must be mounted to settle):
 * - each call's usage — prompt, completion, cached and reasoning tokens — is recorded on the
 *   request with `billing.record(…)`; several calls add up; it replaces what `meterUsage` would
 *   read from the handler's own response, so nothing is billed twice. The request settles
 *   through `meterUsage`'s one atomic settle and its outbox: no call ever waits on Dodo, and a
 *   billing failure never fails an LLM call. Event ids are deterministic
 *   (`<requestId>:input`, `<requestId>:<index>:input`…), so a retried ingest never bills twice.
 * - a stream (`stream: true`) gets `stream_options.include_usage` when the caller did not set
 *   it; the usage chunk is read and, since the caller did not ask for it, not passed on. Every
 *   other chunk is passed on as it arrives, untouched.
 * - a stream the caller abandons (`break`, an error, never read before the response closes)
 *   is aborted upstream and billed what it generated: input estimated from the prompt, output
 *   from the text seen, 4 characters a token, flagged `estimated`.
 * - once a tracked call was made, the request is billed for its tracked calls (and what the
 *   app records) only: if they all failed, it is billed nothing.
 * - a call still running when the response ends (not awaited, or the client left), or started
 *   after it (a background call), is billed on its own, exactly once: a store settlement with
 *   the id `<requestId>:call:<index>`, when `store` and `pricing` are given; otherwise it is
 *   logged as an error with its usage.
 *
 * Outside any request, calls pass through untouched — unless `customerId` is given: each call
 * is then settled for that customer on its own (settlement and event ids
 * `openai-call:<uuid>`, the uuid drawn once per call, so retries of the settlement or of the
 * ingest reuse it).
 *
 * Usage is read when the result is read (awaited, or iterated): `.asResponse()` hands you the
 * raw body, whose usage you record yourself. `client.withOptions(…)` makes a new, untracked
 * client.
 *
 * @example
 * const openai = trackOpenAI(new OpenAI(), { store, pricing });
 * app.post('/v1/summarize', billing.requireCredits({ model: () => 'gpt-4o-mini' }), billing.meterUsage(),
 *   async (req, res) => {
 *     const answer = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages });
 *     res.json({ summary: answer.choices[0]?.message.content }); // billed from answer.usage
 *   });
 */
export function trackOpenAI<Client extends OpenAIClientLike>(
  client: Client,
  options: Readonly<TrackOpenAIOptions> = {},
): Client {
  const config = resolveTrackOpenAIOptions(options);
  const chat = (client as Partial<OpenAIClientLike> | null | undefined)?.chat?.completions;
  if (typeof chat?.create !== 'function') {
    throw new ConfigError(
      'ERR_ELB_INVALID_OPTION',
      'trackOpenAI: `client` must be an OpenAI client from the `openai` package (it has no `chat.completions.create`).',
    );
  }
  if (trackedClients.has(client)) {
    throw new ConfigError(
      'ERR_ELB_INVALID_OPTION',
      'trackOpenAI: this client is already tracked; create another client (`new OpenAI(…)`) for other options.',
    );
  }
  wrapCreate(chat, chatCompletions, config, client);
  if (typeof client.responses?.create === 'function') wrapCreate(client.responses, responses, config, client);
  trackedClients.add(client);
  enableRequestBillingContext();
  return client;
}

function wrapCreate(
  resource: { create: AnyCreate },
  endpoint: Endpoint,
  config: ResolvedTrackOpenAIOptions,
  client: unknown,
): void {
  const create = resource.create;
  resource.create = function trackedCreate(this: unknown, body: unknown, options?: unknown) {
    let call: PreparedCall | undefined;
    try {
      call = prepareCall(endpoint, config, body, options);
    } catch (error) {
      config.logger.error('tracking an OpenAI call failed: it runs untracked', { error });
    }
    if (!call) return create.call(this, body, options);
    return track(create.call(this, call.body, call.options) as SdkPromise, call, endpoint, config, client);
  };
}

interface PreparedCall {
  body: unknown;
  options: unknown;
  tracked: TrackedCall;
  streaming: boolean;
  hides: (event: unknown) => boolean;
}

function prepareCall(
  endpoint: Endpoint,
  config: ResolvedTrackOpenAIOptions,
  requested: unknown,
  options: unknown,
): PreparedCall | undefined {
  if (!isRecord(requested) || typeof requested.model !== 'string' || requested.model === '') return undefined;
  const model = requested.model;
  const owner = ownerOfNewCall(config, model);
  if (!owner) return undefined;
  const body = limitedToRequest(owner, requested, endpoint);
  if (body.stream !== true) {
    const tracked = new TrackedCall(owner, model, body, config, undefined);
    return { body, options, tracked, streaming: false, hides: () => false };
  }
  // Our own controller, combined with the caller's signal, aborts the upstream at any stage —
  // even before the stream object exists — when the response closes.
  const controller = new AbortController();
  const callerSignal = isRecord(options) ? options.signal : undefined;
  const signal =
    callerSignal instanceof AbortSignal ? either(callerSignal, controller.signal) : controller.signal;
  const prepared = endpoint.prepareStream(body);
  const tracked = new TrackedCall(owner, model, body, config, () => controller.abort());
  return {
    body: prepared.body,
    options: { ...(isRecord(options) ? options : {}), signal },
    tracked,
    streaming: true,
    hides: prepared.hides,
  };
}

/**
 * A call made for a request whose output the package bounded (it held credits for at most that
 * many tokens per choice) gets the same limit when it sets none, so the upstream cannot bill more.
 */
function limitedToRequest(
  owner: Owner,
  body: Record<string, unknown>,
  endpoint: Endpoint,
): Record<string, unknown> {
  const perChoice = owner.kind === 'request' ? owner.billing.outputPerChoice : undefined;
  if (perChoice === undefined || readOutputLimit(body) !== undefined) return body;
  return { ...body, [endpoint.limitField]: perChoice };
}

/** A signal aborted when either is (`AbortSignal.any` from Node 20.3, a listener before). */
function either(first: AbortSignal, second: AbortSignal): AbortSignal {
  if (typeof AbortSignal.any === 'function') return AbortSignal.any([first, second]);
  const combined = new AbortController();
  for (const signal of [first, second]) {
    if (signal.aborted) combined.abort(signal.reason);
    else signal.addEventListener('abort', () => combined.abort(signal.reason), { once: true });
  }
  return combined.signal;
}

function track(
  promise: SdkPromise,
  call: PreparedCall,
  endpoint: Endpoint,
  config: ResolvedTrackOpenAIOptions,
  client: unknown,
): unknown {
  const { tracked } = call;
  const onResult = (result: unknown) => {
    try {
      if (call.streaming && isStream(result)) return tapStream(result, tracked, endpoint, call.hides, client);
      tracked.completed(endpoint.readResult(result));
    } catch (error) {
      config.logger.error('reading the usage of an OpenAI call failed', { error });
    }
    return result;
  };
  if (typeof promise?._thenUnwrap !== 'function' || typeof promise.asResponse !== 'function') {
    // Not the SDK's APIPromise: a plain promise carries the result just as well.
    return Promise.resolve(promise).then(onResult, (error: unknown) => {
      tracked.failed();
      throw error;
    });
  }
  // The response's status settles whether anything was generated, without reading its body
  // (so the caller's own `.asResponse()` still can).
  promise.asResponse().catch(() => tracked.failed());
  return promise._thenUnwrap(onResult);
}
