import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import manifest from '../../package.json' with { type: 'json' };

/*
 * Which ioredis the Redis tests run on. By default the repo's own devDependency (the current
 * major); with `ELB_IOREDIS=<folder>` the one installed there, which is how CI runs the RedisStore
 * suites on the older supported major (`ELB_IOREDIS_MAJOR` says which major it installed).
 */

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const folder = process.env.ELB_IOREDIS ?? REPO;
const installed = createRequire(join(folder, 'package.json'));

function majorOf(version: string): number {
  return Number(/^(\d+)\./.exec(version)?.[1]);
}

/** The majors a `^a.b.c || ^d.e.f` peer range accepts. */
function acceptedMajors(range: string): number[] {
  return range.split('||').map((part) => majorOf(part.trim().replace(/^\^/, '')));
}

describe('the ioredis client the tests run on', () => {
  const { version } = installed('ioredis/package.json') as { version: string };

  it('is the one installed where ELB_IOREDIS points (else the repo’s own)', () => {
    expect(Redis).toBe((installed('ioredis') as { Redis: unknown }).Redis);
  });

  it('is a major the peer range accepts, and the major CI asked for', () => {
    expect(acceptedMajors(manifest.peerDependencies.ioredis)).toContain(majorOf(version));
    if (process.env.ELB_IOREDIS_MAJOR) expect(majorOf(version)).toBe(Number(process.env.ELB_IOREDIS_MAJOR));
    else expect(majorOf(version)).toBe(majorOf(manifest.devDependencies.ioredis.replace(/^\^/, '')));
  });
});
