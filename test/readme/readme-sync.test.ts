import { readFile } from 'node:fs/promises';
import { expect, it } from 'vitest';

/** README's examples are tests in this suite: each block must stay identical to its test file. */
it('shows the "Testing your integration" test exactly as the suite runs it', async () => {
  const readme = await readFile(new URL('../../README.md', import.meta.url), 'utf8');
  const test = await readFile(new URL('./testing-your-integration.test.ts', import.meta.url), 'utf8');
  expect(readme).toContain(`\`\`\`ts\n${test}\`\`\``);
});
