import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { type Browser, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseUsd, spendDayPeriod } from '../../src/index.js';
import { type RunningExample, startExample } from './start.js';

const CHROMIUM = '/usr/bin/chromium';
const OUTPUT_DIR = join(process.cwd(), '.test-output');
const available = existsSync(CHROMIUM);

if (!available) {
  const message = `${CHROMIUM} is missing: the status-page browser test cannot run (apt-get install -y chromium).`;
  if (process.env.CI === 'true') throw new Error(`${message} CI must run it.`);
  console.warn(`\n⚠ SKIPPED: ${message}\n`);
}

describe.skipIf(!available)('status page in headless Chromium', () => {
  let example: RunningExample;
  let browser: Browser;

  beforeAll(async () => {
    example = await startExample({ port: 0, env: {} });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
  });
  afterAll(async () => {
    await browser?.close();
    await example?.close();
  });

  it('shows money to the cent, spend per day and recent requests; "Top up $5" returns to the app and shows the new balance', async () => {
    const { demo } = example.embedded!;
    // Earlier days, as a customer who used the API all week would have…
    const day = 86_400_000;
    const past = [
      [6, '0.42'],
      [4, '1.234567'],
      [3, '0.0492853'],
      [1, '0.87'],
    ] as const;
    for (const [daysAgo, cost] of past) {
      const at = Date.now() - daysAgo * day;
      // What billing.spend reads: the store's counters of that day…
      await example.wiring.store.addUsage(demo.customerId, {
        period: spendDayPeriod(new Date(at).toISOString().slice(0, 10)),
        counters: { cost: parseUsd(cost, 'cost'), tokens: 50_000n },
        ttlMs: 7 * day,
      });
      // …and the requests this process served.
      example.activity.add(demo.customerId, {
        requestId: `earlier-${daysAgo}`,
        at,
        model: 'gpt-4o',
        calls: 1,
        inputTokens: 41_000,
        outputTokens: 9_000,
        cost: parseUsd(cost, 'cost'),
        charged: true,
        estimated: false,
      });
    }

    // …and some usage today (two models), billed through the proxy.
    for (const model of ['gpt-4o', 'gpt-4o-mini']) {
      const response = await fetch(`${example.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${demo.apiKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model, messages: [{ role: 'user', content: 'Hello there' }] }),
      });
      expect(response.status).toBe(200);
    }
    // A request is logged once its billing has ended, just after its response.
    await expect
      .poll(async () => (await example.activity.recentRequests(demo.customerId, 10)).length)
      .toBe(6);

    const page = await browser.newPage({ viewport: { width: 900, height: 900 } });
    await page.goto(`${example.url}/#key=${demo.apiKey}`);
    // $5.00 − $0.000045 − $0.0000027: to the cent for people, exactly in the tooltip.
    await expect.poll(() => page.textContent('#balance')).toBe('$5.00');
    expect(await page.getAttribute('#balance', 'title')).toBe('exactly $4.9999523');
    expect(await page.textContent('#tier')).toBe('tier-1');
    expect(await page.textContent('#limits')).toBe(
      '3 requests/min · lifetime spend $0.00 (next: tier-2 at $50.00)',
    );
    expect(await page.textContent('#period-cost')).toBe('<$0.01');

    // Spend per day: 14 bars, the largest day ($1.234567) at full height, labelled to the cent.
    expect(await page.locator('#chart rect.bar').count()).toBe(14);
    const titles = await page.locator('#chart title').allTextContents();
    const date = (daysAgo: number) => new Date(Date.now() - daysAgo * day).toISOString().slice(0, 10);
    expect(titles).toContain(`${date(4)}: $1.23 (exactly $1.234567)`);
    expect(titles).toContain(`${date(3)}: $0.05 (exactly $0.0492853)`);
    expect(titles.at(-1)).toBe(`${date(0)}: <$0.01 (exactly $0.0000477)`);
    expect(await page.textContent('#chart')).toContain('$1.23');
    const heights = await page
      .locator('#chart rect.bar')
      .evaluateAll((bars) => bars.map((bar) => Number(bar.getAttribute('height'))));
    expect(heights.filter((height) => height > 0)).toHaveLength(5); // four earlier days and today
    expect(heights.at(-1)).toBeGreaterThanOrEqual(2); // today's sub-cent spend still shows

    // Recent requests, newest first, each with its cost.
    const rows = await page.locator('#requests tr').allInnerTexts();
    expect(rows.map((row) => row.split('\t').slice(1))).toEqual([
      ['gpt-4o-mini', '2', '4', '<$0.01'],
      ['gpt-4o', '2', '4', '<$0.01'],
      ['gpt-4o', '41000', '9000', '$0.87'],
      ['gpt-4o', '41000', '9000', '$0.05'],
      ['gpt-4o', '41000', '9000', '$1.23'],
      ['gpt-4o', '41000', '9000', '$0.42'],
    ]);
    expect(await page.textContent('#coverage')).toContain('since it started');

    // A second key with a $1 budget, listed with what it has left; no alert has fired.
    expect(await page.locator('#keys tr').allInnerTexts()).toHaveLength(1);
    await page.click('#new-key');
    await expect.poll(() => page.textContent('#key-notice')).toMatch(/^New key \(shown once\): sk-demo-/);
    const keys = await page.locator('#keys tr').allInnerTexts();
    expect(keys).toHaveLength(2);
    expect(keys[0]).toMatch(/\(this key\)\tnone/);
    expect(keys[1]!.split('\t').slice(1)).toEqual(['$1.00', '$0.00', '$1.00']);
    expect(await page.textContent('#alerts')).toBe('No alerts yet.');

    // Auto-recharge: off, then on with the demo's settings.
    expect(await page.textContent('#recharge')).toContain('Off');
    await page.click('#recharge-toggle');
    await expect
      .poll(() => page.textContent('#recharge'))
      .toBe('Below $1.00, $5.00 is charged to your saved card ($0.00 of $20.00 this month).');
    expect(await page.textContent('#recharge-toggle')).toBe('Turn off');

    mkdirSync(OUTPUT_DIR, { recursive: true });
    await page.screenshot({ path: join(OUTPUT_DIR, 'openai-proxy-status-page.png'), fullPage: true });

    // The checkout returns to the address the page was opened at, not the emulator's or a loopback port.
    await Promise.all([page.waitForURL(/\/checkout\//), page.click('#top-up')]);
    await Promise.all([page.waitForURL(`${example.url}/?topup=5&**`), page.click('button[type=submit]')]);
    await expect.poll(() => page.textContent('#balance'), { timeout: 10_000 }).toBe('$10.00');
    expect(await page.getAttribute('#balance', 'title')).toBe('exactly $9.9999523');
    expect(await page.textContent('#notice')).toBe('Credits added: balance $10.00.');
    expect(await page.textContent('#limits')).toContain('lifetime spend $5.00');
    await page.screenshot({
      path: join(OUTPUT_DIR, 'openai-proxy-status-page-after-top-up.png'),
      fullPage: true,
    });
  });
});
