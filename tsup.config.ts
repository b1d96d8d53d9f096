import { defineConfig } from 'tsup';

const LIBRARY = { index: 'src/index.ts', 'testing/index': 'src/testing/index.ts' };

export default defineConfig({
  entry: { ...LIBRARY, cli: 'src/cli.ts' },
  format: ['esm', 'cjs'],
  outDir: 'dist',
  // Types for the two entry points a program imports; the command line needs none.
  dts: { entry: LIBRARY },
  // No source maps: the output is not minified (names and structure are the sources'), and maps
  // of it made up 60 % of the package. A stack trace points into readable code as it is.
  sourcemap: false,
  clean: true,
  target: 'node20',
  // One shared chunk for code both entry points use, so `instanceof ConfigError` holds across them.
  splitting: true,
  // Lua scripts live in their own files and are inlined as strings at build time.
  loader: { '.lua': 'text' },
  // `import.meta.url` in the CommonJS build (the optional peer `prom-client` is loaded from it).
  shims: true,
  outExtension: ({ format }) => ({ js: format === 'cjs' ? '.cjs' : '.js' }),
});
