#!/usr/bin/env node
/**
 * Runs after `tsup` (`npm run build`). The declaration files import the types of optional peer
 * dependencies (`RedisStoreOptions.client` is an ioredis client): an app that does not install
 * that peer would get "Cannot find module 'ioredis'" from `tsc` (with `skipLibCheck: false`).
 * Each such import gets a `// @ts-ignore` on the line TypeScript reports it on, so that
 * - with the peer installed, its types are the real ones (a wrong client is a type error);
 * - without it, they are `any`, and nothing in the app fails to type-check.
 * The optional peers are read from `peerDependenciesMeta` in package.json.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const MARK = '// @ts-ignore -- an optional peer dependency: without it installed, its types are `any`.';

const manifest = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
const optional = Object.entries(manifest.peerDependenciesMeta ?? {})
  .filter(([, meta]) => meta?.optional)
  .map(([name]) => name);

function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}

/** `from 'ioredis'`, `from "ioredis/built/x"`, `import('ioredis')`: where TypeScript reports a missing module. */
const specifier = new RegExp(
  `(?:\\bfrom\\s*|\\bimport\\s*\\(\\s*)['"](?:${optional.map(escapeRegExp).join('|')})(?:/[^'"]*)?['"]`,
);

function declarationFiles(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return declarationFiles(path);
    return /\.d\.[cm]?ts$/.test(entry.name) ? [path] : [];
  });
}

let marked = 0;
if (optional.length > 0) {
  for (const file of declarationFiles(join(ROOT, 'dist'))) {
    const lines = readFileSync(file, 'utf8').split('\n');
    const out = [];
    for (const [index, line] of lines.entries()) {
      const comment = /^\s*(\*|\/\*|\/\/)/.test(line); // an @example in TSDoc, not an import
      if (!comment && specifier.test(line) && lines[index - 1]?.trim() !== MARK) {
        out.push(`${line.match(/^\s*/)[0]}${MARK}`);
        marked += 1;
      }
      out.push(line);
    }
    writeFileSync(file, out.join('\n'));
  }
}
console.log(
  `optional peer types: ${marked} import(s) of ${optional.join(', ') || 'no optional peer'} marked`,
);
