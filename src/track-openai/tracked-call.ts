import { randomUUID } from 'node:crypto';
import { currentBilling, type RequestBilling, type UsageRecord } from '../billing-context.js';
import { RequestEstimate, readOutputLimit } from '../estimate/index.js';
import type { ReportedUsage } from '../meter-usage/usage.js';
import { isReasoningModelName } from '../money.js';
import type { ResolvedTrackOpenAIOptions } from './options.js';
import { settleOutside } from './outside-settlement.js';

/** The tracked calls of one request. */
interface RequestCalls {
  /** Calls started so far: the next call's index. */
  started: number;
  /** True until the response closes: until then, usage is recorded on the request itself. */
  open: boolean;
  /** Calls whose usage is not known yet. */
  pending: Set<TrackedCall>;
  /** The model of the first call, for the empty record that turns automatic capture off. */
  firstModel: string | undefined;
}

/** Whom a call bills: the request it runs in (by index), or the customer given for calls outside any. */
export type Owner =
  | { kind: 'request'; billing: RequestBilling; calls: RequestCalls; index: number }
  | { kind: 'customer'; customerId: string; callId: string };

const callsByRequest = new WeakMap<RequestBilling, RequestCalls>();
const warnedWithoutMeter = new WeakSet<object>();

/**
 * When the response closes: streams still open are aborted and billed what they generated, and
 * a request whose tracked calls recorded nothing (they failed, or a JSON call is still running
 * and will be billed on its own when it returns) gets an empty record, so that what it answered
 * is not billed as if it were an LLM response.
 */
function closeRequest(billing: RequestBilling, calls: RequestCalls): void {
  for (const call of [...calls.pending]) call.responseClosed();
  if (billing.recorded().length === 0 && calls.firstModel !== undefined) {
    billing.record({ model: calls.firstModel, inputTokens: 0, outputTokens: 0 });
  }
  calls.open = false;
}

/** Who a call that starts now bills, or `undefined` when it is not tracked (it passes through). */
export function ownerOfNewCall(config: ResolvedTrackOpenAIOptions, model: string): Owner | undefined {
  const billing = currentBilling.getStore();
  if (billing) {
    let calls = callsByRequest.get(billing);
    if (!calls) {
      const created: RequestCalls = {
        started: 0,
        open: !billing.isEnded,
        pending: new Set(),
        firstModel: undefined,
      };
      if (created.open) billing.onEnding(() => closeRequest(billing, created));
      callsByRequest.set(billing, created);
      calls = created;
    }
    calls.firstModel ??= model;
    return { kind: 'request', billing, calls, index: calls.started++ };
  }
  if (config.customerId !== undefined) {
    return { kind: 'customer', customerId: config.customerId, callId: randomUUID() };
  }
  return undefined;
}

/**
 * One tracked LLM call: what it generated so far, its usage once reported, and where its
 * usage goes — exactly once, however the call ends.
 */
export class TrackedCall {
  private generatedBytes = 0;
  private usage: ReportedUsage | undefined;
  private settled = false;

  constructor(
    private readonly owner: Owner,
    private readonly model: string,
    private readonly body: Readonly<Record<string, unknown>>,
    private readonly config: ResolvedTrackOpenAIOptions,
    /** Aborts the upstream request (streams only). */
    private readonly abortUpstream: (() => void) | undefined,
  ) {
    if (owner.kind === 'request') owner.calls.pending.add(this);
  }

  /** A JSON result arrived: its usage, else an estimate of it. */
  completed(result: { usage: ReportedUsage | undefined; generatedBytes: number }): void {
    this.generatedBytes = result.generatedBytes;
    this.usage = result.usage;
    this.settle();
  }

  /** A stream event went by. Usage is recorded as soon as it is seen. */
  saw(event: { usage: ReportedUsage | undefined; generatedBytes: number }): void {
    this.generatedBytes += event.generatedBytes;
    if (event.usage) {
      this.usage = event.usage;
      this.settle();
    }
  }

  /** The stream's iteration ended: read to its end, or abandoned (`break`, an error). */
  streamEnded(readToEnd: boolean): void {
    if (!readToEnd && !this.settled) this.abortUpstream?.();
    this.settle();
  }

  /**
   * The caller stopped reading a stream before its end: when the call can be billed on its own
   * (`store` and `pricing` given), the rest of the stream is read in the background to its
   * usage, which is what the upstream bills — within `abandonedStreamTimeoutMs`, after which the
   * upstream is aborted and billed an estimate. Without them, it is aborted now.
   */
  abandoned(
    rest: AsyncIterator<unknown>,
    readEvent: (event: unknown) => { usage: ReportedUsage | undefined; generatedBytes: number },
  ): void {
    if (this.settled) return;
    if (!this.config.settlement) {
      this.streamEnded(false);
      return;
    }
    const timer = setTimeout(() => this.streamEnded(false), this.config.abandonedStreamTimeoutMs);
    timer.unref();
    (async () => {
      for (;;) {
        const next = await rest.next();
        if (next.done || this.settled) break;
        this.saw(readEvent(next.value));
      }
    })()
      .catch(() => {
        // The upstream broke off: what it generated is estimated below.
      })
      .finally(() => {
        clearTimeout(timer);
        this.streamEnded(false);
      });
  }

  /** The call failed before any result: nothing was generated to bill. */
  failed(): void {
    this.settled = true;
    this.forget();
  }

  /**
   * The request's billing ended while this call was running. A call is then billed on its own
   * when its usage arrives (the handler may still be reading a stream); a stream nobody reads
   * to its usage within `abandonedStreamTimeoutMs` — or any, when the call cannot be billed on
   * its own — is aborted and billed what it generated.
   */
  responseClosed(): void {
    if (!this.abortUpstream) return;
    if (!this.config.settlement) {
      this.abortUpstream();
      this.settle();
      return;
    }
    setTimeout(() => this.streamEnded(false), this.config.abandonedStreamTimeoutMs).unref();
  }

  private forget(): void {
    if (this.owner.kind === 'request') this.owner.calls.pending.delete(this);
  }

  private settle(): void {
    if (this.settled) return;
    this.settled = true;
    this.forget();
    const record: UsageRecord = this.usage ? { model: this.model, ...this.usage } : this.estimated();
    try {
      this.deliver(record);
    } catch (error) {
      this.config.logger.error('recording the usage of a tracked OpenAI call failed', {
        usage: record,
        error,
      });
    }
  }

  /**
   * What a call whose usage never arrived is billed: its input bounded from its whole body, and
   * its generated text's bytes — at most the call's output limit, and all of it for a model that
   * reasons, whose reasoning never shows in the text. Cutting a call short cannot make it cheap.
   */
  private estimated(): UsageRecord {
    const settings = this.owner.kind === 'request' ? this.owner.billing.settings : undefined;
    let input: number | undefined;
    try {
      input = settings && new RequestEstimate(this.model, this.body, settings).inputTokens;
    } catch {
      // A body the estimate cannot walk: its serialized size bounds it.
    }
    const limit = readOutputLimit(this.body);
    const reasons = isReasoningModelName(this.model);
    const outputTokens =
      limit === undefined ? this.generatedBytes : reasons ? limit : Math.min(limit, this.generatedBytes);
    return {
      model: this.model,
      inputTokens: input ?? Buffer.byteLength(JSON.stringify(this.body), 'utf8'),
      outputTokens,
      estimated: true,
    };
  }

  private deliver(record: UsageRecord): void {
    const { owner, config } = this;
    if (owner.kind === 'customer') {
      // Validated at startup: a customer is only accepted with a store and pricing.
      if (config.settlement) {
        settleOutside(config.settlement, {
          customerId: owner.customerId,
          settlementId: `openai-call:${owner.callId}`,
          record,
        });
      }
      return;
    }
    const { billing, calls, index } = owner;
    if (calls.open) {
      if (!billing.settler && !warnedWithoutMeter.has(config)) {
        warnedWithoutMeter.add(config);
        config.logger.warn(
          'trackOpenAI recorded usage on a request without meterUsage: mount meterUsage on the route, or nothing is settled',
          { customerId: billing.customerId, requestId: billing.requestId },
        );
      }
      billing.record(record);
      return;
    }
    if (!config.settlement) {
      config.logger.error(
        'a tracked OpenAI call finished after its request was settled: its usage is not billed (pass `store` and `pricing` to trackOpenAI to bill such calls)',
        { customerId: billing.customerId, requestId: billing.requestId, usage: record },
      );
      return;
    }
    settleOutside(config.settlement, {
      customerId: billing.customerId,
      settlementId: `${billing.requestId}:call:${index}`,
      record,
      usagePeriod: billing.usagePeriod,
      chargeCredits: billing.chargeCredits,
    });
  }
}
