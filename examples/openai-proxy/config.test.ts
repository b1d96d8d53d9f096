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
  it('runs embedded with no keys at all, on PORT 3000 by default', () => {
    expect(loadConfig({})).toMatchObject({ mode: 'embedded', port: 3000 });
    expect(loadConfig({ PORT: '3999' })).toMatchObject({ mode: 'embedded', port: 3999 });
  });

  it('runs against the real services when every variable is set', () => {
    const config = loadConfig(REAL);
    expect(config).toMatchObject({
      mode: 'real',
      dodo: { environment: 'test_mode', creditEntitlementId: 'cde_123', packs: { '5': 'pdt_5' } },
      apiKeys: { 'sk-alice': 'cus_alice' },
    });
  });

  it('names the missing variable when only some are set', () => {
    const error = failure({ OPENAI_API_KEY: 'sk-openai' });
    expect(error.variable).toBe('DODO_PAYMENTS_API_KEY');
    expect(error.message).toMatch(/OPENAI_API_KEY is set/);
    expect(error.message).toMatch(/REDIS_URL/);
    const { REDIS_URL: _, ...withoutRedis } = REAL;
    expect(failure(withoutRedis).variable).toBe('REDIS_URL');
    const { API_KEYS: __, ...withoutKeys } = REAL;
    expect(failure(withoutKeys).variable).toBe('API_KEYS');
  });

  it('names the variable of an inconsistent setting', () => {
    expect(failure({ PORT: 'http' }).variable).toBe('PORT');
    expect(failure({ ...REAL, DODO_PAYMENTS_ENVIRONMENT: 'production' }).variable).toBe(
      'DODO_PAYMENTS_ENVIRONMENT',
    );
    expect(failure({ ...REAL, DODO_PAYMENTS_WEBHOOK_KEY: 'not a key!' }).variable).toBe(
      'DODO_PAYMENTS_WEBHOOK_KEY',
    );
    expect(failure({ ...REAL, REDIS_URL: 'localhost:6379' }).variable).toBe('REDIS_URL');
    expect(failure({ ...REAL, API_KEYS: '["sk-alice"]' }).variable).toBe('API_KEYS');
    expect(failure({ ...REAL, DODO_CREDIT_PACKS: '{"five":"pdt_5"}' }).variable).toBe('DODO_CREDIT_PACKS');
    expect(failure({ ...REAL, API_KEYS_FILE: '/nowhere.json' }).variable).toBe('API_KEYS_FILE');
  });

  it('reads API keys from a JSON file', () => {
    const file = join(mkdtempSync(join(tmpdir(), 'elb-keys-')), 'keys.json');
    writeFileSync(file, '{"sk-bob":"cus_bob"}');
    const { API_KEYS: _, ...env } = REAL;
    expect(loadConfig({ ...env, API_KEYS_FILE: file })).toMatchObject({ apiKeys: { 'sk-bob': 'cus_bob' } });
  });

  it('fails at startup naming REDIS_URL when Redis does not answer', async () => {
    await expect(
      startExample({ port: 0, env: { ...REAL, REDIS_URL: 'redis://127.0.0.1:1' } }),
    ).rejects.toMatchObject({ name: 'ExampleConfigError', variable: 'REDIS_URL' });
  });
});
