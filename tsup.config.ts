import { defineConfig } from 'tsup';

export default defineConfig({
  entry: { index: 'src/index.ts', 'testing/index': 'src/testing/index.ts', cli: 'src/cli.ts' },
  format: ['esm', 'cjs'],
  outDir: 'dist',
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
  // One shared chunk for code both entry points use, so `instanceof ConfigError` holds across them.
  splitting: true,
  // Lua scripts live in their own files and are inlined as strings at build time.
  loader: { '.lua': 'text' },
  outExtension: ({ format }) => ({ js: format === 'cjs' ? '.cjs' : '.js' }),
});
