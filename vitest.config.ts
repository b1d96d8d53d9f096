import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig, type Plugin } from 'vitest/config';

/** Loads `.lua` files as strings, as the build's `text` loader does. */
function luaAsText(): Plugin {
  return {
    name: 'lua-as-text',
    load(id) {
      if (!id.endsWith('.lua')) return null;
      return `export default ${JSON.stringify(readFileSync(id, 'utf8'))};`;
    },
  };
}

/**
 * `ELB_IOREDIS=<folder>` runs the tests on the `ioredis` installed in `<folder>/node_modules`
 * instead of the repo's own: CI proves the older supported major with it (see .ci/run).
 */
function ioredisOverride() {
  const folder = process.env.ELB_IOREDIS;
  if (!folder) return [];
  const entry = createRequire(join(folder, 'package.json')).resolve('ioredis');
  return [{ find: /^ioredis$/, replacement: entry }];
}

/**
 * `ELB_REDIS=<folder>` does the same for node-redis (`redis`): CI runs the node-redis suites on
 * its older supported major with it. `redis` re-exports `@redis/client`, which resolves from there.
 */
function nodeRedisOverride() {
  const folder = process.env.ELB_REDIS;
  if (!folder) return [];
  const entry = createRequire(join(folder, 'package.json')).resolve('redis');
  return [{ find: /^redis$/, replacement: entry }];
}

export default defineConfig({
  plugins: [luaAsText()],
  // Tests written as a user writes them import the package by name: they get the sources.
  resolve: {
    alias: [
      {
        find: /^express-llm-billing\/testing$/,
        replacement: fileURLToPath(new URL('./src/testing/index.ts', import.meta.url)),
      },
      {
        find: /^express-llm-billing$/,
        replacement: fileURLToPath(new URL('./src/index.ts', import.meta.url)),
      },
      ...ioredisOverride(),
      ...nodeRedisOverride(),
    ],
  },
  test: {
    include: ['test/**/*.test.ts', 'src/**/*.test.ts', 'examples/**/*.test.ts'],
    testTimeout: 20_000,
    hookTimeout: 60_000,
  },
});
