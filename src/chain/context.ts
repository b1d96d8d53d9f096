import { ConfigError } from '../errors.js';
import { resolveLogger, resolveStore, type SharedOptions } from '../options.js';
import {
  REQUEST_SETTING_KEYS,
  type RequestSettings,
  type RequestSettingsOptions,
  resolveRequestSettings,
} from '../request-settings.js';
import type { ChainContext } from './index.js';

/** The context of a middleware created on its own: its own options are the request's settings. */
export function standaloneContext(options: Readonly<SharedOptions>, middleware: string): ChainContext {
  if (options === null || typeof options !== 'object') {
    throw new ConfigError('ERR_ELB_INVALID_OPTION', `${middleware}: options must be an object.`);
  }
  const settings = resolveRequestSettings(options, middleware);
  return {
    settings: () => settings,
    store: resolveStore(options, middleware),
    logger: resolveLogger(options.logger),
  };
}

/**
 * The per-request settings of one `createBilling`: the shared ones, plus any a middleware's own
 * options set that the shared ones do not. Every middleware of the billing reads the same
 * resolved settings, so none wins by running first; two middlewares giving one setting two
 * values is a `ConfigError` at startup.
 */
export class SharedRequestSettings {
  private readonly values: Record<string, unknown> = {};
  private readonly setBy = new Map<string, string>();
  private resolved: RequestSettings | undefined;

  constructor(shared: Readonly<RequestSettingsOptions>) {
    for (const key of REQUEST_SETTING_KEYS) {
      if (shared[key] !== undefined) this.values[key] = shared[key];
    }
  }

  /** Takes the per-request settings of a middleware's own options, at startup. */
  adopt(options: Readonly<RequestSettingsOptions>, middleware: string): void {
    let changed = false;
    for (const key of REQUEST_SETTING_KEYS) {
      const value = options[key];
      if (value === undefined) continue;
      const current = this.values[key];
      if (current === undefined) {
        this.values[key] = value;
        this.setBy.set(key, middleware);
        changed = true;
      } else if (current !== value) {
        throw new ConfigError(
          'ERR_ELB_CONFLICTING_SETTINGS',
          `${middleware}: \`${key}\` differs from the one ${this.setBy.get(key) ?? 'createBilling'} was given. It is a per-request setting, the same for every middleware of a request: pass it once, to createBilling.`,
        );
      }
    }
    if (changed || !this.resolved) this.resolved = resolveRequestSettings(this.values, middleware);
  }

  /** The settings, resolved; a middleware calls `adopt` first, at startup, which validates them. */
  get(): RequestSettings {
    this.resolved ??= resolveRequestSettings(this.values, 'createBilling');
    return this.resolved;
  }
}
