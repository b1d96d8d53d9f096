import { readdir, readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';

const readme = await readFile(new URL('../../README.md', import.meta.url), 'utf8');

/** README's examples are tests in this suite: each block must stay identical to its test file. */
describe('README', () => {
  it('shows the "Testing your integration" test exactly as the suite runs it', async () => {
    const test = await readFile(new URL('./testing-your-integration.test.ts', import.meta.url), 'utf8');
    expect(readme).toContain(`\`\`\`ts\n${test}\`\`\``);
  });

  it('shows the quick start exactly as the suite runs it', async () => {
    const quickStart = await readFile(new URL('./quick-start.ts', import.meta.url), 'utf8');
    expect(readme).toContain(`\`\`\`ts\n${quickStart}\`\`\``);
  });

  it('says on its first screen how to install it, on which Node, and the two commands', () => {
    const firstScreen = readme.split('\n').slice(0, 40).join('\n');
    expect(firstScreen).toContain('npm install express-llm-billing express dodopayments');
    expect(firstScreen).toMatch(/Node\.js 20 or later/);
    expect(firstScreen).toMatch(/^npm install && npm start/m);
    expect(firstScreen).toMatch(/^npm install && npm test/m);
  });

  it('stays short, speaks to users, and links only to docs that ship', async () => {
    expect(readme.trimEnd().split('\n').length).toBeLessThanOrEqual(300);
    expect(readme).not.toMatch(/\bseed\b|SEED_TIERS|\bissue \d+|the issue'?s/i);
    const shipped = new Set(await readdir(new URL('../../docs/', import.meta.url)));
    const linked = [...readme.matchAll(/https:\/\/unpkg\.com\/express-llm-billing\/docs\/([\w-]+\.md)/g)];
    expect(linked.length).toBeGreaterThan(5);
    for (const [, file] of linked) expect(shipped).toContain(file);
    const pkg = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8'));
    expect(pkg.files).toContain('docs');
  });
});
