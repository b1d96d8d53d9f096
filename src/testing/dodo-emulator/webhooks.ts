import http from 'node:http';
import https from 'node:https';
import { Webhook } from 'standardwebhooks';
import { checkWebhookUrl } from './options.js';
import type { Runtime } from './runtime.js';

/** One webhook the emulator emitted, as Dodo would send it. */
export interface EmittedWebhook {
  /** The `webhook-id` header: the same on every attempt and duplicate of this webhook. */
  webhookId: string;
  type: string;
  /** The JSON body: `{ business_id, type, timestamp, data }`. */
  payload: { business_id: string; type: string; timestamp: string; data: Record<string, unknown> };
  /**
   * `pending` while attempts remain, `delivered` after a 2xx, `failed` when every retry was
   * refused, `recorded` when no `webhookUrl` is set (nothing is sent).
   */
  status: 'pending' | 'delivered' | 'failed' | 'recorded';
  attempts: number;
}

/** One HTTP attempt to deliver a webhook. */
export interface WebhookDelivery {
  webhookId: string;
  type: string;
  url: string;
  /** 1 for the first attempt, 2 for the first retry, … */
  attempt: number;
  /** True for the extra copy sent by `duplicateWebhooks`. */
  duplicate: boolean;
  /** The `webhook-timestamp` header (seconds), fresh on each attempt. */
  timestamp: number;
  /** The receiver's status code, or undefined when it did not answer. */
  status?: number;
  error?: string;
  ok: boolean;
}

/** What `waitForWebhooks` waits for. */
export interface WebhookFilter {
  /** Event type(s), e.g. `'credit.added'`. Default: any. */
  type?: string | readonly string[];
  /** How many matching webhooks to wait for. Default `1`. */
  count?: number;
  /** Extra condition on the emitted webhook. */
  where?: (webhook: EmittedWebhook) => boolean;
  /** Reject after this many ms. Default `2000`. */
  timeoutMs?: number;
}

export interface WebhookSettings {
  url: string | undefined;
  key: string;
  retry: readonly number[];
  timeoutMs: number;
  duplicate: boolean;
  shuffle: boolean;
}

interface Waiter {
  check(): boolean;
}

/**
 * Signs and sends webhooks the way Dodo does (Standard Webhooks: `webhook-id`,
 * `webhook-timestamp`, `webhook-signature`), retrying on non-2xx with the same id and a fresh
 * timestamp and signature. Webhooks emitted in the same turn of the event loop form a batch,
 * delivered in order (or shuffled), one after another.
 */
export class WebhookSender {
  private readonly emitted: EmittedWebhook[] = [];
  private readonly deliveries: WebhookDelivery[] = [];
  private readonly signer: Webhook;
  private readonly waiters = new Set<Waiter>();
  private readonly inFlight = new Set<http.ClientRequest>();
  private batch: EmittedWebhook[] = [];
  private chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly runtime: Runtime,
    private readonly settings: WebhookSettings,
  ) {
    this.signer = new Webhook(settings.key);
  }

  setUrl(url: string | undefined): void {
    if (url !== undefined) checkWebhookUrl(url);
    this.settings.url = url;
  }

  get url(): string | undefined {
    return this.settings.url;
  }

  /** Records a webhook and schedules its delivery. */
  emit(type: string, data: Record<string, unknown>): EmittedWebhook {
    const webhook: EmittedWebhook = {
      webhookId: this.runtime.id('msg'),
      type,
      payload: { business_id: this.runtime.businessId, type, timestamp: this.runtime.iso(), data },
      status: this.settings.url ? 'pending' : 'recorded',
      attempts: 0,
    };
    this.emitted.push(webhook);
    if (webhook.status === 'pending' && !this.runtime.closed) {
      if (this.batch.length === 0) this.runtime.later(0, () => this.flush());
      this.batch.push(webhook);
    }
    this.notify();
    return webhook;
  }

  private flush(): Promise<void> {
    const batch = this.batch;
    this.batch = [];
    if (this.settings.shuffle) shuffle(batch);
    const run = async () => {
      for (const webhook of batch) {
        const copies = this.settings.duplicate ? [false, true] : [false];
        for (const duplicate of copies) await this.attempt(webhook, 1, duplicate);
      }
    };
    this.chain = this.chain.then(run, run);
    return this.runtime.track(this.chain);
  }

  private async attempt(webhook: EmittedWebhook, attempt: number, duplicate: boolean): Promise<void> {
    const url = this.settings.url;
    if (this.runtime.closed || !url) return;
    const body = JSON.stringify(webhook.payload);
    const sentAt = new Date(this.runtime.now());
    const headers = {
      'content-type': 'application/json',
      'webhook-id': webhook.webhookId,
      'webhook-timestamp': String(Math.floor(sentAt.getTime() / 1000)),
      'webhook-signature': this.signer.sign(webhook.webhookId, sentAt, body),
      'user-agent': 'dodo-emulator',
    };
    const result = await this.post(url, body, headers);
    const ok = result.status !== undefined && result.status >= 200 && result.status < 300;
    this.deliveries.push({
      webhookId: webhook.webhookId,
      type: webhook.type,
      url,
      attempt,
      duplicate,
      timestamp: Number(headers['webhook-timestamp']),
      ok,
      ...result,
    });
    if (!duplicate) webhook.attempts = attempt;
    if (ok) {
      if (!duplicate || webhook.status !== 'delivered') webhook.status = 'delivered';
    } else if (attempt <= this.settings.retry.length) {
      const wait = this.settings.retry[attempt - 1] ?? 0;
      this.runtime.later(wait, () => this.attempt(webhook, attempt + 1, duplicate));
    } else if (webhook.status === 'pending') {
      webhook.status = 'failed';
    }
    this.notify();
  }

  private post(
    url: string,
    body: string,
    headers: Record<string, string>,
  ): Promise<{ status?: number; error?: string }> {
    return new Promise((resolve) => {
      const target = new URL(url);
      const send = target.protocol === 'https:' ? https.request : http.request;
      // A one-off agent: the connection closes with the answer, so no socket outlives close().
      const request = send(target, { method: 'POST', headers, agent: false }, (response) => {
        response.resume();
        response.on('end', () => {
          this.inFlight.delete(request);
          resolve({ status: response.statusCode });
        });
        response.on('error', (error) => {
          this.inFlight.delete(request);
          resolve({ status: response.statusCode, error: error.message });
        });
      });
      this.inFlight.add(request);
      request.setTimeout(this.settings.timeoutMs, () =>
        request.destroy(new Error(`no answer within ${this.settings.timeoutMs} ms`)),
      );
      request.on('error', (error) => {
        this.inFlight.delete(request);
        resolve({ error: error.message });
      });
      request.end(body);
    });
  }

  private notify(): void {
    for (const waiter of this.waiters) waiter.check();
  }

  /** Every webhook emitted so far, oldest first. */
  list(): EmittedWebhook[] {
    return [...this.emitted];
  }

  /** Every delivery attempt so far, oldest first. */
  attempts(): WebhookDelivery[] {
    return [...this.deliveries];
  }

  /**
   * Resolves with the first `count` webhooks matching `filter` once each is done: delivered
   * with a 2xx (or recorded, when no `webhookUrl` is set). Rejects after `timeoutMs`.
   */
  waitFor(filter: WebhookFilter = {}): Promise<EmittedWebhook[]> {
    const count = filter.count ?? 1;
    const timeoutMs = filter.timeoutMs ?? 2000;
    const types = filter.type === undefined ? undefined : ([] as string[]).concat(filter.type);
    const matches = (webhook: EmittedWebhook) =>
      (types === undefined || types.includes(webhook.type)) && (filter.where?.(webhook) ?? true);
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        check: () => {
          const done = this.emitted.filter(
            (webhook) =>
              matches(webhook) && (webhook.status === 'delivered' || webhook.status === 'recorded'),
          );
          if (done.length < count) return false;
          clearTimeout(timer);
          this.waiters.delete(waiter);
          resolve(done.slice(0, count));
          return true;
        },
      };
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        const seen =
          this.emitted.map((webhook) => `${webhook.type} (${webhook.status})`).join(', ') || 'none';
        reject(
          new Error(
            `waitForWebhooks: expected ${count} delivered webhook(s)${types ? ` of type ${types.join('|')}` : ''} within ${timeoutMs} ms; emitted so far: ${seen}.`,
          ),
        );
      }, timeoutMs);
      this.waiters.add(waiter);
      waiter.check();
    });
  }

  /** Aborts requests in flight (close()). */
  close(): void {
    for (const request of this.inFlight) request.destroy();
    this.inFlight.clear();
    this.batch = [];
  }
}

function shuffle<T>(items: T[]): void {
  for (let i = items.length - 1; i > 0; i -= 1) {
    const j = Math.floor(Math.random() * (i + 1));
    [items[i], items[j]] = [items[j] as T, items[i] as T];
  }
}
