import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../src/errors.js';
import {
  costOfTokens,
  displayUsd,
  formatCredits,
  formatUsd,
  MONEY_SCALE,
  moneyFromMinorUnits,
  parseCredits,
  parsePricePerMillion,
  parseUsd,
  resolvePricing,
  UNITS_PER_DOLLAR,
  unitsPerCredit,
} from '../src/money.js';

const SEED_PRICING = {
  'gpt-4o': { input: '2.50', output: '10.00' },
  'gpt-4o-mini': { input: '0.15', output: '0.60' },
  o1: { input: '15.00', output: '60.00' },
};

describe('money', () => {
  it('is documented at 10^-12 USD', () => {
    expect(MONEY_SCALE).toBe(12);
    expect(UNITS_PER_DOLLAR).toBe(1_000_000_000_000n);
  });

  it('prices $0.15 per 1M tokens exactly per token', () => {
    expect(parsePricePerMillion('0.15', 'p')).toBe(150_000n);
    expect(parsePricePerMillion('0.0375', 'p')).toBe(37_500n);
    expect(parsePricePerMillion('2.50', 'p')).toBe(2_500_000n);
  });

  it('accepts a number only when its decimal string is exact', () => {
    expect(parsePricePerMillion(2.5, 'pricing["gpt-4o"].input')).toBe(2_500_000n);
    expect(() => parsePricePerMillion(0.1 + 0.2, 'pricing["x"].input')).toThrow(ConfigError);
    expect(() => parsePricePerMillion(0.1 + 0.2, 'pricing["x"].input')).toThrow(
      /pricing\["x"\]\.input.*decimal string/,
    );
  });

  it('refuses prices that are not exact per token, negative or not decimals, naming the option', () => {
    expect(() => parsePricePerMillion('0.0000001', 'pricing["m"].output')).toThrow(
      /pricing\["m"\]\.output.*6 decimal places/,
    );
    expect(() => parsePricePerMillion('-1', 'pricing["m"].input')).toThrow(/pricing\["m"\]\.input.*negative/);
    expect(() => parsePricePerMillion('two', 'pricing["m"].input')).toThrow(/pricing\["m"\]\.input/);
    expect(() => resolvePricing({})).toThrow(/`pricing` must price at least one model/);
    expect(() => resolvePricing({ m: { input: '1', output: Number.NaN } })).toThrow(/pricing\["m"\]\.output/);
  });

  it('costs the seed table exactly', () => {
    const pricing = resolvePricing(SEED_PRICING);
    // 1,500 input + 800 output tokens of GPT-4o = $0.00375 + $0.008
    expect(formatUsd(costOfTokens(pricing.get('gpt-4o')!, 1500, 800).total)).toBe('0.01175');
    expect(formatUsd(costOfTokens(pricing.get('gpt-4o-mini')!, 1, 1).total)).toBe('0.00000075');
    expect(formatUsd(costOfTokens(pricing.get('o1')!, 1_000_000, 1_000_000).total)).toBe('75');
  });

  it('sums N one-token requests to exactly the cost of one N-token request', () => {
    const pricing = resolvePricing(SEED_PRICING);
    fc.assert(
      fc.property(
        fc.constantFrom(...pricing.values()),
        fc.integer({ min: 0, max: 200_000 }),
        fc.integer({ min: 0, max: 200_000 }),
        (price, inputTokens, outputTokens) => {
          let summed = 0n;
          const oneInput = costOfTokens(price, 1, 0).total;
          const oneOutput = costOfTokens(price, 0, 1).total;
          for (let i = 0; i < inputTokens; i++) summed += oneInput;
          for (let i = 0; i < outputTokens; i++) summed += oneOutput;
          return summed === costOfTokens(price, inputTokens, outputTokens).total;
        },
      ),
      { numRuns: 30 },
    );
  });

  it('rejects fractional or negative token counts', () => {
    const price = resolvePricing(SEED_PRICING).get('gpt-4o')!;
    expect(() => costOfTokens(price, 1.5, 0)).toThrow(/inputTokens/);
    expect(() => costOfTokens(price, 0, -1)).toThrow(/outputTokens/);
  });

  it('round-trips USD amounts, negative ones included', () => {
    fc.assert(
      fc.property(
        fc.bigInt({ min: -(10n ** 24n), max: 10n ** 24n }),
        (units) => parseUsd(formatUsd(units), 'x') === units,
      ),
    );
    expect(formatUsd(-1n)).toBe('-0.000000000001');
    expect(displayUsd(parseUsd('4.5', 'x'))).toBe('$4.50');
    expect(displayUsd(parseUsd('-0.0000025', 'x'))).toBe('-$0.0000025');
  });

  it('shows money to the cent for people, rounded half away from zero, never through a float', () => {
    const cents = (text: string) => displayUsd(parseUsd(text, 'x'), { decimals: 2 });
    expect(cents('4.9507147')).toBe('$4.95');
    expect(cents('-0.0492853')).toBe('-$0.05');
    expect(cents('4.999955')).toBe('$5.00');
    expect(cents('0.005')).toBe('$0.01');
    expect(cents('0.004999999999')).toBe('$0.00');
    expect(cents('-0.005')).toBe('-$0.01');
    // A float would print 1.005 as 1.00 (1.00499999…); the money is exact.
    expect(cents('1.005')).toBe('$1.01');
    expect(cents('-0.000045')).toBe('$0.00');
    expect(cents('123456789012.345')).toBe('$123456789012.35');
    expect(displayUsd(parseUsd('2.5', 'x'), { decimals: 0 })).toBe('$3');
    expect(displayUsd(parseUsd('0.0000025', 'x'), { decimals: 12 })).toBe('$0.000002500000');
    expect(() => displayUsd(1n, { decimals: 13 })).toThrow(RangeError);
    expect(() => displayUsd(1n, { decimals: 1.5 })).toThrow(/`decimals`/);
    fc.assert(
      fc.property(fc.bigInt({ min: -(10n ** 20n), max: 10n ** 20n }), (units) => {
        const shown = cents(formatUsd(units));
        expect(shown).toMatch(/^-?\$\d+\.\d\d$/);
        // What is shown is the nearest cent: never more than half a cent away.
        const back = parseUsd(shown.replace('$', ''), 'x');
        const error = back - units;
        expect(error <= UNITS_PER_DOLLAR / 200n && error >= -UNITS_PER_DOLLAR / 200n).toBe(true);
        // And half a cent exactly rounds away from zero.
        if ((units < 0n ? -units : units) % (UNITS_PER_DOLLAR / 100n) === UNITS_PER_DOLLAR / 200n) {
          expect(back > 0n ? back > units : back < units).toBe(true);
        }
      }),
    );
  });

  it("parses and formats Dodo's decimal credit strings exactly", () => {
    const cents = unitsPerCredit(100);
    expect(cents).toBe(10_000_000_000n);
    expect(parseCredits('4999.985', cents)).toBe(parseUsd('49.99985', 'x'));
    expect(formatCredits(parseCredits('4999.985', cents), cents)).toBe('4999.985');
    expect(formatCredits(parseCredits('-12.5', cents), cents)).toBe('-12.5');
    expect(parseCredits('500', cents)).toBe(parseUsd('5', 'x'));
    fc.assert(
      fc.property(
        fc.constantFrom(1, 100, 1000, '0.5', 8),
        fc.bigInt({ min: -(10n ** 20n), max: 10n ** 20n }),
        (perDollar, units) => {
          const perCredit = unitsPerCredit(perDollar);
          const whole = units - (units % perCredit); // representable in credits exactly
          return parseCredits(formatCredits(whole, perCredit), perCredit) === whole;
        },
      ),
    );
  });

  it('reads digits finer than one unit as less, never more', () => {
    const cents = unitsPerCredit(100);
    expect(parseCredits('0.00000000001', cents)).toBe(0n);
    expect(parseCredits('-0.00000000001', cents)).toBe(-1n);
  });

  it('refuses a creditsPerDollar that would make credits inexact', () => {
    expect(() => unitsPerCredit(3)).toThrow(/`creditsPerDollar` must be/);
    expect(() => unitsPerCredit(0)).toThrow(ConfigError);
    expect(() => unitsPerCredit('abc', 'shared.creditsPerDollar')).toThrow(/shared\.creditsPerDollar/);
  });

  it("converts Dodo's minor units (cents) to money exactly", () => {
    expect(moneyFromMinorUnits(6000)).toBe(parseUsd('60', 'x'));
    expect(moneyFromMinorUnits(1)).toBe(parseUsd('0.01', 'x'));
    expect(() => moneyFromMinorUnits(1.5)).toThrow();
  });
});
