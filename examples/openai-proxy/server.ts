import { register } from 'node:module';

// The library runs from its TypeScript source here; its `.lua` imports need the loader of
// tools/ first (as `npm run bench` does), so the rest is imported only after registering it.
register('../../tools/lua-hooks.mjs', import.meta.url);
const { startExample } = await import('./start.js');
const { banner } = await import('./banner.js');
const { ExampleConfigError } = await import('./config.js');

try {
  const example = await startExample();
  console.log(banner(example));
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.log(`\n${signal}: flushing usage to Dodo and stopping…`);
    example.close().then(
      () => process.exit(0),
      (error: unknown) => {
        console.error('stopping failed:', error);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
} catch (error) {
  if (error instanceof ExampleConfigError) {
    console.error(`Cannot start: ${error.message}`);
    process.exit(1);
  }
  throw error;
}
