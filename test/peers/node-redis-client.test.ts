import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as redis from 'redis';
import { describe, expect, it } from 'vitest';
import manifest from '../../package.json' with { type: 'json' };

/*
 * Which node-redis (`redis`) the node-redis tests run on. By default the repo's own
 * devDependency (the current major); with `ELB_REDIS=<folder>` the one installed there, which is
 * how CI runs the node-redis suites on the older supported major (`ELB_REDIS_MAJOR` says which).
 */

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const folder = process.env.ELB_REDIS ?? REPO;
const installed = createRequire(join(folder, 'package.json'));

function majorOf(version: string): number {
  return Number(/^(\d+)\./.exec(version)?.[1]);
}

/** The majors a `^a.b.c || ^d.e.f` peer range accepts. */
function acceptedMajors(range: string): number[] {
  return range.split('||').map((part) => majorOf(part.trim().replace(/^\^/, '')));
}

describe('the node-redis client the tests run on', () => {
  const { version } = installed('redis/package.json') as { version: string };

  it('is the one installed where ELB_REDIS points (else the repo’s own)', () => {
    expect(redis.createClient).toBe((installed('redis') as typeof redis).createClient);
  });

  it('is a major the peer range accepts, and the major CI asked for', () => {
    expect(acceptedMajors(manifest.peerDependencies.redis)).toContain(majorOf(version));
    if (process.env.ELB_REDIS_MAJOR) expect(majorOf(version)).toBe(Number(process.env.ELB_REDIS_MAJOR));
    else expect(majorOf(version)).toBe(majorOf(manifest.devDependencies.redis.replace(/^\^/, '')));
  });
});
