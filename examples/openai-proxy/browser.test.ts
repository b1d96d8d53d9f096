import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { type Browser, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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

  it('shows balance, tier and usage; "Top up $5" runs the checkout and shows the new balance', async () => {
    const { demo } = example.embedded!;
    // Some usage, so the chart has a bar.
    await fetch(`${example.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${demo.apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'Hello there' }] }),
    });
    const page = await browser.newPage();
    await page.goto(`${example.url}/#key=${demo.apiKey}`);
    await expect.poll(() => page.textContent('#balance')).toBe('$4.999955');
    expect(await page.textContent('#tier')).toBe('tier-1');
    expect(await page.textContent('#limits')).toContain('3 requests/min');
    expect(await page.textContent('#chart')).toContain('gpt-4o');

    await Promise.all([page.waitForURL(/\/checkout\//), page.click('#top-up')]);
    await Promise.all([page.waitForURL(`${example.url}/**`), page.click('button[type=submit]')]);
    await expect.poll(() => page.textContent('#balance'), { timeout: 10_000 }).toBe('$9.999955');
    expect(await page.textContent('#notice')).toContain('Credits added');
    expect(await page.textContent('#limits')).toContain('lifetime spend $5.00');

    mkdirSync(OUTPUT_DIR, { recursive: true });
    await page.screenshot({ path: join(OUTPUT_DIR, 'openai-proxy-status-page.png'), fullPage: true });
  });
});
