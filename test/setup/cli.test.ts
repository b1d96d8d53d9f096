import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createDodoEmulator, type DodoEmulator } from '../../src/testing/index.js';
import { configDir, runCli, SEED_PRICING } from './support.js';

const SEED_CONFIG = {
  pricing: SEED_PRICING,
  creditsPerDollar: 100,
  meters: { strategy: 'weighted' },
  plans: [
    { key: 'plus', name: 'Plus', price: '20.00' },
    { key: 'team', name: 'Team (per seat)', price: '25.00' },
  ],
};

/** The status column of each object line of the CLI's table: `{ 'meter llm.input_tokens': 'created', … }`. */
function statuses(stdout: string): Record<string, string> {
  const rows: Record<string, string> = {};
  for (const line of stdout.split('\n')) {
    const match =
      /^(planned|created|unchanged|updated|would create|would update|conflict|failed)\s+(credit entitlement|meter|metering product|top-up product|plan product)\s+(\S+(?: credits)?)/.exec(
        line,
      );
    if (match) rows[`${match[2]} ${match[3]}`] = match[1] as string;
  }
  return rows;
}

describe('npx express-llm-billing setup, against the emulator', () => {
  let emulator: DodoEmulator;
  beforeEach(async () => {
    emulator = await createDodoEmulator({ meterDelayMs: 0 });
  });
  afterEach(() => emulator.close());

  it('creates everything the first time, then changes nothing on a second run', async () => {
    const cwd = configDir(SEED_CONFIG);
    const first = await runCli(['setup'], { cwd, emulator });
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    expect(statuses(first.stdout)).toEqual({
      'credit entitlement USD credits': 'created',
      'meter llm.input_tokens': 'created',
      'meter llm.output_tokens': 'created',
      'metering product metering': 'created',
      'top-up product top-up-5': 'created',
      'top-up product top-up-10': 'created',
      'top-up product top-up-50': 'created',
      'top-up product top-up-100': 'created',
      'plan product plan-plus': 'created',
      'plan product plan-team': 'created',
    });
    expect(first.stdout).toContain('Done: 10 created.');

    // What Dodo now holds: the entitlement, meters linked at the exact rate, packs issuing credits.
    const client = emulator.client();
    const [entitlement] = (await client.creditEntitlements.list()).items;
    expect(entitlement).toMatchObject({
      name: 'USD credits',
      currency: 'USD',
      overage_enabled: false,
      rollover_enabled: false,
      expires_after_days: null,
    });
    expect(first.stdout).toContain(`creditEntitlementId: ${entitlement?.id}`);
    const products = (await client.products.list({ page_size: 100 })).items;
    const pack = products.find((product) => product.metadata.elb_key === 'top-up-50')!;
    expect((await client.products.retrieve(pack.product_id)).credit_entitlements).toEqual([
      expect.objectContaining({ credit_entitlement_id: entitlement?.id, credits_amount: '5000' }),
    ]);
    expect(pack.price).toBe(5000);
    // The API account: a $0 usage plan, the credits attached to it first (none issued per
    // cycle), then both meters billed in them at the exact rate, with no free threshold.
    const metering = products.find((product) => product.metadata.elb_key === 'metering')!;
    const usagePlan = await client.products.retrieve(metering.product_id);
    expect(usagePlan.credit_entitlements).toEqual([
      expect.objectContaining({ credit_entitlement_id: entitlement?.id, credits_amount: '0' }),
    ]);
    const price = usagePlan.price;
    expect(price).toMatchObject({
      type: 'usage_based_price',
      fixed_price: 0,
      payment_frequency_interval: 'Month',
    });
    expect(
      price.type === 'usage_based_price' &&
        price.meters?.map((meter) => [
          meter.credit_entitlement_id,
          meter.meter_units_per_credit,
          meter.free_threshold,
        ]),
    ).toEqual([
      [entitlement?.id, '200000', 0],
      [entitlement?.id, '200000', 0],
    ]);
    expect(first.stdout).toContain(`usagePlanProductId: ${metering.product_id}`);

    const second = await runCli(['setup'], { cwd, emulator });
    expect(second.code).toBe(0);
    expect(new Set(Object.values(statuses(second.stdout)))).toEqual(new Set(['unchanged']));
    expect(Object.keys(statuses(second.stdout))).toHaveLength(10);
    expect(second.stdout).toContain('Nothing to do: all 10 objects unchanged.');
    expect((await client.products.list({ page_size: 100 })).items).toHaveLength(products.length);
    expect((await client.meters.list()).items).toHaveLength(2);
  });

  it('updates only what the config changed: a new model moves the weighted base, a new pack is added', async () => {
    const cwd = configDir(SEED_CONFIG);
    expect((await runCli(['setup'], { cwd, emulator })).code).toBe(0);
    writeFileSync(
      join(cwd, 'billing.config.json'),
      JSON.stringify({
        ...SEED_CONFIG,
        pricing: { ...SEED_PRICING, 'gpt-4.1-nano': { input: '0.075', output: '0.30' } },
        topUps: ['5', '10', '50', '200'],
      }),
    );
    const dry = await runCli(['setup', '--dry-run'], { cwd, emulator });
    expect(dry.code).toBe(0);
    expect(statuses(dry.stdout)).toMatchObject({
      'metering product metering': 'would update',
      'top-up product top-up-200': 'would create',
      'top-up product top-up-5': 'unchanged',
    });
    expect(dry.stdout).toContain('400000 weighted tokens/credit');

    const run = await runCli(['setup'], { cwd, emulator });
    expect(run.code).toBe(0);
    expect(statuses(run.stdout)).toMatchObject({
      'meter llm.input_tokens': 'unchanged',
      'metering product metering': 'updated',
      'top-up product top-up-200': 'created',
    });
    expect(run.stdout).toContain('↳ rates of llm.input_tokens, llm.output_tokens');
    expect(new Set(Object.values(statuses((await runCli(['setup'], { cwd, emulator })).stdout)))).toEqual(
      new Set(['unchanged']),
    );
  });

  it('reports a conflicting meter and changes nothing, with a non-zero exit', async () => {
    const existing = emulator.createMeter({ eventName: 'llm.output_tokens', aggregation: 'count' });
    const cwd = configDir(SEED_CONFIG);
    const run = await runCli(['setup'], { cwd, emulator });
    expect(run.code).toBe(1);
    expect(statuses(run.stdout)).toEqual({ 'meter llm.output_tokens': 'conflict' });
    expect(run.stdout).toContain(`the existing meter ${existing.id} aggregates count, not sum(tokens)`);
    expect(run.stderr).toMatch(/Refused: existing objects conflict .* nothing was changed/);
    const client = emulator.client();
    expect((await client.meters.list()).items).toEqual([
      expect.objectContaining({ id: existing.id, aggregation: { type: 'count', key: null } }),
    ]);
    expect((await client.creditEntitlements.list()).items).toEqual([]);
    expect((await client.products.list()).items).toEqual([]);
  });

  it('stops at a failing step with a non-zero exit that names it', async () => {
    emulator.fault('POST /products', { status: 500, times: 10 });
    const run = await runCli(['setup'], { cwd: configDir(SEED_CONFIG), emulator });
    expect(run.code).toBe(1);
    expect(statuses(run.stdout)).toEqual({
      'credit entitlement USD credits': 'created',
      'meter llm.input_tokens': 'created',
      'meter llm.output_tokens': 'created',
      'metering product metering': 'failed',
    });
    expect(run.stderr).toMatch(/^Failed at metering product metering: 500/m);
  });

  it('prints the plan as a table without a key, and refuses an inexact per-model config', async () => {
    const offline = await runCli(['setup', '--dry-run'], { cwd: configDir(SEED_CONFIG) });
    expect(offline.code).toBe(0);
    expect(offline.stdout).toContain('nothing read from Dodo');
    expect(offline.stdout).toMatch(/STATUS\s+OBJECT\s+KEY\s+SETTINGS/);
    expect(Object.values(statuses(offline.stdout))).toEqual(Array(10).fill('planned'));

    const inexact = await runCli(['setup'], {
      cwd: configDir({ ...SEED_CONFIG, meters: { strategy: 'per-model' } }),
      emulator,
    });
    expect(inexact.code).toBe(1);
    expect(inexact.stderr).toMatch(/^Config error: .*gpt-4o-mini's input tokens .*strategy: 'weighted'/);
    expect((await emulator.client().meters.list()).items).toEqual([]);

    const noKey = await runCli(['setup'], { cwd: configDir(SEED_CONFIG) });
    expect(noKey.code).toBe(2);
    expect(noKey.stderr).toContain('DODO_PAYMENTS_API_KEY');
  });

  it('attaches the credits to a usage plan an older setup created without them, and refuses more meters than a product carries', async () => {
    const cwd = configDir(SEED_CONFIG);
    expect((await runCli(['setup'], { cwd, emulator })).code).toBe(0);
    const client = emulator.client();
    const usagePlan = (await client.products.list({ page_size: 100 })).items.find(
      (product) => product.metadata.elb_key === 'metering',
    )!;
    // What setup created before: the meters' links, no credits attached (Dodo would not deduct).
    const full = await client.products.retrieve(usagePlan.product_id);
    await client.products.update(usagePlan.product_id, {
      price: { ...full.price, meters: [] } as never,
      credit_entitlements: [],
    });
    const run = await runCli(['setup'], { cwd, emulator });
    expect(run.code).toBe(0);
    expect(statuses(run.stdout)).toMatchObject({ 'metering product metering': 'updated' });
    expect(run.stdout).toContain('↳ USD credits attached, rates of llm.input_tokens, llm.output_tokens');
    expect((await client.products.retrieve(usagePlan.product_id)).credit_entitlements).toHaveLength(1);

    const tooMany = await runCli(['setup'], {
      cwd: configDir({
        ...SEED_CONFIG,
        pricing: { 'gpt-4o': SEED_PRICING['gpt-4o'], 'gpt-4.1': { input: '2.00', output: '8.00' } },
        meters: { strategy: 'per-model' },
      }),
      emulator,
    });
    expect(tooMany.code).toBe(1);
    expect(tooMany.stderr).toMatch(/links 4 meters .* at most 3 .*strategy": "weighted"/);
  });
});
