import { fileURLToPath } from 'node:url';
import { defineConfig, mergeConfig } from 'vitest/config';
import base from '../vitest.config.js';

/**
 * The test suite's config with `dodopayments` resolved to the oldest version the peer range
 * accepts, installed by tools/dodo-floor.sh into .test-output/dodo-floor: the SDK-facing tests run
 * on it unchanged.
 */
const floor = fileURLToPath(
  new URL('../.test-output/dodo-floor/node_modules/dodopayments/', import.meta.url),
);

export default mergeConfig(
  base,
  defineConfig({
    resolve: {
      alias: [
        { find: /^dodopayments$/, replacement: `${floor}index.mjs` },
        { find: /^dodopayments\/(.*)$/, replacement: `${floor}$1` },
      ],
    },
  }),
);
