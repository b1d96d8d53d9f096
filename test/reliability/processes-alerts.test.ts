import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { BalanceAlert } from '../../src/alerts/index.js';
import { parseUsd } from '../../src/money.js';
import { requireRedis } from '../support/redis.js';
import { appProcessSuite, COST, chat } from './support.js';

/*
 * Low-balance alerts set as shares of the last top-up, across real processes: two app processes
 * on one Redis settle one customer's burst. The top-up lands through Dodo's `credit.added`
 * webhook in one process; each settlement reads the last top-up with the balance, in its own
 * atomic step, so exactly one settlement in either process crosses each share.
 */

const redisUrl = await requireRedis('reliability: alerts across processes');
const usd = (text: string) => parseUsd(text, 'test');

describe.runIf(redisUrl)('alerts as shares of the last top-up across two processes on one Redis', () => {
  const suite = appProcessSuite(redisUrl!);

  it('fires 25 % and 10 % of a top-up once each, whichever process settles, and a larger top-up moves them', {
    timeout: 60_000,
  }, async () => {
    const { dodo } = suite;
    const { first, second, store } = await suite.twoApps({
      alerts: {
        balanceBelow: [{ fractionOfLastTopUp: '0.25' }, { fractionOfLastTopUp: '0.1' }],
        webhookKey: dodo.emulator.webhookKey,
      },
    });
    dodo.emulator.setWebhookUrl(`${first.url}/webhooks/dodo`);
    const customer = dodo.customer({ email: `${randomUUID()}@example.com` }).customer_id;
    const alerts = () => [...first.alerts, ...second.alerts] as BalanceAlert[];
    const topUp = async (credits: string, dollars: string) => {
      dodo.emulator.addCredits(customer, dodo.entitlementId, credits);
      await expect.poll(async () => (await store.getBalance(customer))?.lastTopUp).toBe(usd(dollars));
    };
    const burst = (count: number) =>
      Promise.all(Array.from({ length: count }, (_, i) => chat((i % 2 ? first : second).url, customer))).then(
        (responses) => responses.map((response) => response.status),
      );
    const crossed = (list: BalanceAlert[]) =>
      list
        .map(({ threshold, fractionOfLastTopUp, lastTopUp }) => [threshold, fractionOfLastTopUp, lastTopUp])
        .sort((a, b) => Number(usd(b[0]!) - usd(a[0]!)));
    const check = (alert: BalanceAlert) => {
      expect(alert.customerId).toBe(customer);
      expect(usd(alert.before)).toBeGreaterThan(usd(alert.threshold));
      expect(usd(alert.balance)).toBeLessThanOrEqual(usd(alert.threshold));
      expect(usd(alert.before) - usd(alert.balance)).toBe(COST);
    };

    // $0.20: shares of $0.05 and $0.02; 122 requests of $0.00163 fit in it.
    await topUp('20', '0.2');
    let statuses = await burst(130);
    expect(statuses.filter((status) => status === 200)).toHaveLength(122);
    await expect.poll(() => alerts().length).toBe(2);
    expect(crossed(alerts())).toEqual([
      ['0.05', '0.25', '0.2'],
      ['0.02', '0.1', '0.2'],
    ]);
    for (const alert of alerts()) check(alert);

    // $0.30 more: the balance is $0.30114, the shares $0.075 and $0.03.
    await topUp('30', '0.3');
    expect((await store.getBalance(customer))?.balance).toBe(usd('0.30114'));
    statuses = await burst(190);
    expect(statuses.filter((status) => status === 200)).toHaveLength(184);
    await expect.poll(() => alerts().length).toBe(4);
    const later = alerts().filter((alert) => alert.lastTopUp === '0.3');
    expect(crossed(later)).toEqual([
      ['0.075', '0.25', '0.3'],
      ['0.03', '0.1', '0.3'],
    ]);
    for (const alert of later) check(alert);
    await dodo.emulator.settle();
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(alerts()).toHaveLength(4);
  });
});
