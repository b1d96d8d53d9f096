import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BillingConfig } from '../../src/setup/plan.js';
import type { DodoEmulator } from '../../src/testing/index.js';

const CLI = fileURLToPath(new URL('../../src/cli.ts', import.meta.url));
const TSX = import.meta.resolve('tsx');

/** The seed's three models, USD per 1M tokens. */
export const SEED_PRICING = {
  'gpt-4o': { input: '2.50', output: '10.00' },
  'gpt-4o-mini': { input: '0.15', output: '0.60' },
  o1: { input: '15.00', output: '60.00' },
} as const;

/** Writes `config` as billing.config.json in a fresh directory; returns the directory. */
export function configDir(config: BillingConfig | Record<string, unknown>): string {
  const dir = mkdtempSync(join(tmpdir(), 'elb-setup-'));
  writeFileSync(join(dir, 'billing.config.json'), JSON.stringify(config, null, 2));
  return dir;
}

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `express-llm-billing <args>` as a child process in `cwd` (asynchronously: the emulator
 * answering it lives in this process). With `emulator`, targets it with `--base-url`/`--api-key`.
 */
export function runCli(
  args: readonly string[],
  options: { cwd: string; emulator?: DodoEmulator; env?: NodeJS.ProcessEnv },
): Promise<CliRun> {
  const target = options.emulator
    ? ['--base-url', options.emulator.baseURL, '--api-key', options.emulator.apiKey]
    : [];
  const env = { ...process.env, DODO_PAYMENTS_API_KEY: '', DODO_PAYMENTS_BASE_URL: '', ...options.env };
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', TSX, CLI, ...args, ...target],
      { cwd: options.cwd, env, timeout: 20_000 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}
