import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ExampleConfigError, loadConfig } from './config.js';
import { startExample } from './start.js';

const REAL = {
  DODO_PAYMENTS_API_KEY: 'dodo_test_key',
  DODO_PAYMENTS_ENVIRONMENT: 'test_mode',
  DODO_CREDIT_ENTITLEMENT_ID: 'cde_123',
  DODO_USAGE_PLAN_PRODUCT_ID: 'pdt_usage',
  DODO_PAYMENTS_WEBHOOK_KEY: 'whsec_dGVzdHNlY3JldHRlc3RzZWNyZXQ=',
  DODO_CREDIT_PACKS: '{"5":"pdt_5","10":"pdt_10","50":"pdt_50","100":"pdt_100"}',
  OPENAI_API_KEY: 'sk-openai',
  REDIS_URL: 'redis://127.0.0.1:6379',
  API_KEYS: '{"sk-alice":"cus_alice"}',
};

function failure(env: Record<string, string>): ExampleConfigError {
  try {
    loadConfig(env);
  } catch (error) {
    if (error instanceof ExampleConfigError) return error;
    throw error;
  }
  throw new Error('loadConfig did not fail');
}

describe('loadConfig', () => {
  it('runs on stand-ins with no keys at all, on PORT 3000 by default', () => {
    expect(loadConfig({})).toEqual({
      port: 3000,
      host: undefined,
      publicUrl: undefined,
      dodo: undefined,
      upstream: undefined,
      redisUrl: undefined,
      ignored: [],
    });
    expect(loadConfig({ PORT: '3999' })).toMatchObject({ port: 3999 });
  });

  it('uses OPENAI_API_KEY or REDIS_URL found in the environment, with the emulated Dodo', () => {
    expect(loadConfig({ OPENAI_API_KEY: 'sk-openai' })).toMatchObject({
      dodo: undefined,
      upstream: { apiKey: 'sk-openai', baseURL: undefined },
      redisUrl: undefined,
    });
    expect(loadConfig({ REDIS_URL: 'redis://127.0.0.1:6379' })).toMatchObject({
      dodo: undefined,
      upstream: undefined,
      redisUrl: 'redis://127.0.0.1:6379',
    });
    expect(
      loadConfig({
        OPENAI_API_KEY: 'sk-x',
        OPENAI_BASE_URL: 'http://127.0.0.1:11434/v1',
        REDIS_URL: 'rediss://r:6380',
      }),
    ).toMatchObject({
      dodo: undefined,
      upstream: { apiKey: 'sk-x', baseURL: 'http://127.0.0.1:11434/v1' },
      redisUrl: 'rediss://r:6380',
    });
  });

  it('names the variables it ignores, and why, instead of refusing to start', () => {
    const config = loadConfig({ OPENAI_BASE_URL: 'http://127.0.0.1:11434/v1', API_KEYS: '{"sk-a":"cus_a"}' });
    expect(config).toMatchObject({ dodo: undefined, upstream: undefined });
    expect(config.ignored).toEqual([
      expect.stringMatching(/^OPENAI_BASE_URL \(the mock LLM answers: set OPENAI_API_KEY/),
      expect.stringMatching(/^API_KEYS \(it names customers of real Dodo: set DODO_PAYMENTS_API_KEY/),
    ]);
  });

  it('runs against real Dodo when every Dodo variable is set', () => {
    const config = loadConfig(REAL);
    expect(config).toMatchObject({
      dodo: {
        environment: 'test_mode',
        creditEntitlementId: 'cde_123',
        packs: { '5': 'pdt_5' },
        apiKeys: { 'sk-alice': 'cus_alice' },
      },
      upstream: { apiKey: 'sk-openai' },
      redisUrl: 'redis://127.0.0.1:6379',
    });
    // Dodo's test mode on the mock LLM and a memory store: each part on its own.
    const { OPENAI_API_KEY: _, REDIS_URL: __, ...dodoOnly } = REAL;
    expect(loadConfig(dodoOnly)).toMatchObject({ dodo: { environment: 'test_mode' }, upstream: undefined });
  });

  it("switches to real Dodo only with Dodo's own variables, then names the missing one", () => {
    const error = failure({ DODO_PAYMENTS_API_KEY: 'dodo_test_key', OPENAI_API_KEY: 'sk-openai' });
    expect(error.variable).toBe('DODO_PAYMENTS_ENVIRONMENT');
    expect(error.message).toMatch(/DODO_PAYMENTS_API_KEY is set/);
    expect(error.message).toMatch(/Unset every DODO_ variable to run on the Dodo emulator/);
    expect(failure({ DODO_TEAM_PRODUCT_ID: 'pdt_team' }).variable).toBe('DODO_PAYMENTS_API_KEY');
    const { API_KEYS: _, ...withoutKeys } = REAL;
    expect(failure(withoutKeys).variable).toBe('API_KEYS');
  });

  it('refuses live mode on the mock LLM or without Redis: real money gets real answers and keeps its usage', () => {
    const live = { ...REAL, DODO_PAYMENTS_ENVIRONMENT: 'live_mode' };
    expect(loadConfig(live)).toMatchObject({ dodo: { environment: 'live_mode' } });
    const { OPENAI_API_KEY: _, ...mockUpstream } = live;
    expect(failure(mockUpstream).variable).toBe('OPENAI_API_KEY');
    const { REDIS_URL: __, ...memory } = live;
    expect(failure(memory).variable).toBe('REDIS_URL');
  });

  it('names the variable of an inconsistent setting', () => {
    expect(failure({ PORT: 'http' }).variable).toBe('PORT');
    expect(failure({ PORT: '65536' }).variable).toBe('PORT');
    expect(failure({ ...REAL, DODO_PAYMENTS_ENVIRONMENT: 'production' }).variable).toBe(
      'DODO_PAYMENTS_ENVIRONMENT',
    );
    expect(failure({ ...REAL, DODO_PAYMENTS_WEBHOOK_KEY: 'not a key!' }).variable).toBe(
      'DODO_PAYMENTS_WEBHOOK_KEY',
    );
    expect(failure({ REDIS_URL: 'localhost:6379' }).variable).toBe('REDIS_URL');
    expect(failure({ OPENAI_API_KEY: 'sk-x', OPENAI_BASE_URL: 'not a url' }).variable).toBe(
      'OPENAI_BASE_URL',
    );
    expect(failure({ PUBLIC_URL: 'ftp://example.com' }).variable).toBe('PUBLIC_URL');
    expect(failure({ ...REAL, API_KEYS: '["sk-alice"]' }).variable).toBe('API_KEYS');
    expect(failure({ ...REAL, DODO_CREDIT_PACKS: '{"five":"pdt_5"}' }).variable).toBe('DODO_CREDIT_PACKS');
    expect(failure({ ...REAL, API_KEYS_FILE: '/nowhere.json' }).variable).toBe('API_KEYS_FILE');
  });

  it('reads API keys from a JSON file', () => {
    const file = join(mkdtempSync(join(tmpdir(), 'elb-keys-')), 'keys.json');
    writeFileSync(file, '{"sk-bob":"cus_bob"}');
    const { API_KEYS: _, ...env } = REAL;
    expect(loadConfig({ ...env, API_KEYS_FILE: file })).toMatchObject({
      dodo: { apiKeys: { 'sk-bob': 'cus_bob' } },
    });
  });

  it('fails at startup naming REDIS_URL when Redis does not answer, with real or emulated Dodo', async () => {
    for (const env of [{ ...REAL, REDIS_URL: 'redis://127.0.0.1:1' }, { REDIS_URL: 'redis://127.0.0.1:1' }]) {
      await expect(startExample({ port: 0, env })).rejects.toMatchObject({
        name: 'ExampleConfigError',
        variable: 'REDIS_URL',
      });
    }
  });
});
