import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ConfigError } from '../errors.js';
import type { BillingConfig } from './plan.js';

/** Config files looked for in the working directory, in this order. */
export const CONFIG_FILES = ['billing.config.json', 'billing.config.mjs', 'billing.config.js'] as const;

/**
 * Loads the billing config the app uses: `path`, or the first of `CONFIG_FILES` in `cwd`. JSON is
 * parsed; `.mjs`/`.js` is imported and its default export (or the module itself) is the config.
 */
export async function loadBillingConfig(
  path: string | undefined,
  cwd = process.cwd(),
): Promise<{ path: string; config: BillingConfig }> {
  const file = path
    ? resolve(cwd, path)
    : CONFIG_FILES.map((name) => resolve(cwd, name)).find((candidate) => existsSync(candidate));
  if (!file) {
    throw new ConfigError(
      'ERR_ELB_NO_CONFIG',
      `No billing config: create ${CONFIG_FILES.slice(0, 2).join(' or ')} in ${cwd}, or pass --config <path>.`,
    );
  }
  if (!existsSync(file))
    throw new ConfigError('ERR_ELB_NO_CONFIG', `The config file ${file} does not exist.`);
  if (file.endsWith('.json')) {
    try {
      return { path: file, config: JSON.parse(readFileSync(file, 'utf8')) as BillingConfig };
    } catch (error) {
      throw new ConfigError(
        'ERR_ELB_INVALID_CONFIG',
        `${file} is not valid JSON: ${(error as Error).message}`,
      );
    }
  }
  const module = (await import(pathToFileURL(file).href)) as { default?: BillingConfig };
  return { path: file, config: (module.default ?? module) as BillingConfig };
}
