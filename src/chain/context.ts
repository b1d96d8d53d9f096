import { ConfigError } from '../errors.js';
import { resolveObserver } from '../metrics/observer.js';
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
  const logger = resolveLogger(options.logger);
  return {
    settings: () => settings,
    store: resolveStore(options, middleware),
    logger,
    metrics: resolveObserver(options, logger, middleware),
  };
}

/**
 * The per-request settings of one `createBilling`'s chains: the shared ones, with the
 * per-request options a chain's own middlewares give on top (`requireCredits({ model })` on a
 * route that prices every request at one model). The middlewares of one chain must agree: two
 * values for one setting in one chain are a `ConfigError` at startup. Chains without their own
 * share one resolved object; when chains with different settings meet on one request, the
 * request says so (`checkSameSettings`).
 */
export class RequestSettingsScope {
  private readonly base: Record<string, unknown> = {};
  private resolvedBase: RequestSettings | undefined;

  constructor(shared: Readonly<RequestSettingsOptions>) {
    for (const key of REQUEST_SETTING_KEYS) {
      if (shared[key] !== undefined) this.base[key] = shared[key];
    }
  }

  /**
   * The settings of a chain made of middlewares with these options, resolved now (a missing or
   * invalid setting is named at startup).
   */
  forChain(
    parts: readonly { options: Readonly<RequestSettingsOptions>; middleware: string }[],
  ): () => RequestSettings {
    const own: Record<string, unknown> = {};
    const setBy = new Map<string, string>();
    for (const { options, middleware } of parts) {
      for (const key of REQUEST_SETTING_KEYS) {
        const value = options[key];
        if (value === undefined || value === this.base[key]) continue;
        if (own[key] !== undefined && own[key] !== value) {
          throw new ConfigError(
            'ERR_ELB_CONFLICTING_SETTINGS',
            `${middleware}: \`${key}\` differs from the one ${setBy.get(key)} was given in the same chain. It is a per-request setting, one value for every middleware of a request: pass it once.`,
          );
        }
        own[key] = value;
        setBy.set(key, middleware);
      }
    }
    const name = parts.map((part) => part.middleware).join(', ') || 'createBilling';
    if (Object.keys(own).length === 0) {
      this.resolvedBase ??= resolveRequestSettings(this.base, name);
      const settings = this.resolvedBase;
      return () => settings;
    }
    const settings = resolveRequestSettings({ ...this.base, ...own }, name);
    return () => settings;
  }
}
