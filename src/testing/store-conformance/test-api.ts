/** The matchers the suite asserts with, as vitest's `expect` (and Jest's) has them. */
export interface ConformanceMatchers<Result> {
  toBe(expected: unknown): Result;
  toEqual(expected: unknown): Result;
  toMatchObject(expected: object): Result;
  toBeUndefined(): Result;
  toHaveLength(length: number): Result;
  toBeInstanceOf(expected: unknown): Result;
  toBeGreaterThan(expected: number | bigint): Result;
  toBeLessThan(expected: number | bigint): Result;
  toBeLessThanOrEqual(expected: number | bigint): Result;
}

/** What `expect(actual)` returns. */
export interface ConformanceAssertion extends ConformanceMatchers<void> {
  readonly not: ConformanceMatchers<void>;
  readonly resolves: ConformanceMatchers<Promise<void>>;
  readonly rejects: ConformanceMatchers<Promise<void>>;
}

/**
 * The test runner the conformance suite declares its cases with: `describe`, `it`,
 * `beforeEach`, `afterEach` and `expect`. Pass vitest's module (`import * as vitest from
 * 'vitest'`): the package does not depend on a test runner, yours is used.
 */
export interface ConformanceTestApi {
  describe(name: string, body: () => void): void;
  it(name: string, body: () => Promise<void>, timeout?: number): void;
  beforeEach(body: () => Promise<void>): void;
  afterEach(body: () => Promise<void>): void;
  expect(actual: unknown): ConformanceAssertion;
}
