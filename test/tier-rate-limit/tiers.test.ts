import { describe, expect, it } from 'vitest';
import * as packageExports from '../../src/index.js';
import { UNITS_PER_DOLLAR } from '../../src/money.js';
import { MemoryStore } from '../../src/store/memory.js';
import { openAIDuration } from '../../src/tier-rate-limit/headers.js';
import { GUIDE_TIERS, OPENAI_TIERS, type Tier, tierRateLimit } from '../../src/tier-rate-limit/index.js';
import { resolveTiers, tierFor } from '../../src/tier-rate-limit/tiers.js';

const DAY = 24 * 60 * 60_000;
const build = (tiers: unknown) => () =>
  tierRateLimit({ store: new MemoryStore(), customerId: () => 'cus_1', tiers: tiers as Tier[] });

describe('tiers: data validated at startup', () => {
  it('accepts both presets, with OpenAI’s spend and days thresholds', () => {
    expect(resolveTiers(GUIDE_TIERS).map((tier) => [tier.name, tier.minSpend, tier.rpm])).toEqual([
      ['tier-1', 0n, 3],
      ['tier-2', 50n * UNITS_PER_DOLLAR, 10],
      ['tier-3', 250n * UNITS_PER_DOLLAR, 50],
    ]);
    expect(
      OPENAI_TIERS.map((tier) => [tier.name, String(tier.minSpend), tier.minDaysSinceFirstPayment ?? 0]),
    ).toEqual([
      ['free', '0', 0],
      ['tier-1', '5', 0],
      ['tier-2', '50', 7],
      ['tier-3', '100', 7],
      ['tier-4', '250', 14],
      ['tier-5', '1000', 30],
    ]);
    expect(build(OPENAI_TIERS)).not.toThrow();
  });

  it('keeps SEED_TIERS, the former name of GUIDE_TIERS, as a deprecated alias of the same array', () => {
    expect(packageExports.GUIDE_TIERS).toBe(GUIDE_TIERS);
    expect(packageExports.SEED_TIERS).toBe(GUIDE_TIERS);
  });

  it.each([
    [[], /`tiers` must be a non-empty array/],
    [[{ name: 'a', minSpend: '5', rpm: 3 }], /tiers\[0\] must start at minSpend "0"/],
    [
      [
        { name: 'a', minSpend: '0', rpm: 3 },
        { name: 'a', minSpend: '10', rpm: 5 },
      ],
      /tiers\[1\] \("a"\) needs a unique, non-empty `name`/,
    ],
    [
      [
        { name: 'a', minSpend: '0', rpm: 3 },
        { name: 'b', minSpend: '10', rpm: 0 },
      ],
      /tiers\[1\] \("b"\)\.rpm must be a positive integer \(got 0\)/,
    ],
    [
      [
        { name: 'a', minSpend: '0', rpm: 3 },
        { name: 'b', minSpend: '10', rpm: 5, tpm: 1.5 },
      ],
      /tiers\[1\] \("b"\)\.tpm must be a positive integer \(got 1\.5\)/,
    ],
    [
      [
        { name: 'a', minSpend: '0', rpm: 3 },
        { name: 'b', minSpend: '10', rpm: 5, rpd: -1 },
      ],
      /tiers\[1\] \("b"\)\.rpd must be a positive integer \(got -1\)/,
    ],
    [
      [
        { name: 'a', minSpend: '0', rpm: 3 },
        { name: 'b', minSpend: '50', rpm: 5 },
        { name: 'c', minSpend: '10', rpm: 9 },
      ],
      /tiers\[2\] \("c"\) must require more than tiers\[1\] \("b"\)/,
    ],
    [
      [
        { name: 'a', minSpend: '0', rpm: 3 },
        { name: 'b', minSpend: '50', minDaysSinceFirstPayment: 7, rpm: 5 },
        { name: 'c', minSpend: '100', minDaysSinceFirstPayment: 3, rpm: 9 },
      ],
      /tiers\[2\] \("c"\)\.minDaysSinceFirstPayment \(3\) must not be below tiers\[1\] \("b"\)'s \(7\)/,
    ],
    [
      [
        { name: 'a', minSpend: '0', rpm: 3 },
        { name: 'b', minSpend: 'ten', rpm: 5 },
      ],
      /tiers\[1\] \("b"\)\.minSpend/,
    ],
  ])('refuses bad tiers with a message naming the entry (%#)', (tiers, message) => {
    expect(build(tiers)).toThrow(message);
  });

  it('picks the highest tier whose spend and days are both met', () => {
    const tiers = resolveTiers(OPENAI_TIERS);
    const paidAt = 1_000 * DAY;
    const usd = (dollars: number) => BigInt(dollars) * UNITS_PER_DOLLAR;
    expect(tierFor(tiers, 0n, undefined, paidAt).name).toBe('free');
    expect(tierFor(tiers, usd(60), paidAt, paidAt + 6 * DAY + DAY - 1).name).toBe('tier-1');
    expect(tierFor(tiers, usd(60), paidAt, paidAt + 7 * DAY).name).toBe('tier-2');
    expect(tierFor(tiers, usd(5000), paidAt, paidAt + 29 * DAY).name).toBe('tier-4');
    expect(tierFor(tiers, usd(5000), paidAt, paidAt + 30 * DAY).name).toBe('tier-5');
  });
});

describe('openAIDuration', () => {
  it.each([
    [0, '0ms'],
    [20, '20ms'],
    [999.2, '1s'],
    [1000, '1s'],
    [1001, '2s'],
    [59_001, '1m0s'],
    [360_000, '6m0s'],
    [3_723_000, '1h2m3s'],
  ])('%d ms → %s', (ms, text) => {
    expect(openAIDuration(ms)).toBe(text);
  });
});
