import { Redis } from 'ioredis';
import { SCRIPT_NAMES, scriptSha } from '../src/store/redis-scripts.js';

/**
 * Where a Redis's script time went, by script: `npx tsx --import ./tools/register-lua.mjs
 * bench/script-costs.ts <redis url>` reads the SLOWLOG of a Redis the bench ran against (its
 * `REDIS_URL`), started with `--slowlog-log-slower-than` low enough to log every script (5 µs)
 * and a long `--slowlog-max-len`, and sums each script's calls and time. Commands a script runs
 * are logged too when they pass the threshold; they are left out here (their time is in their
 * script's). docs/performance.md shows the whole sequence.
 */
const [url = 'redis://127.0.0.1:6379'] = process.argv.slice(2);
const redis = new Redis(url);
const names = new Map(SCRIPT_NAMES.map((name) => [scriptSha(name), name]));
const entries = (await redis.slowlog('GET', -1)) as [number, number, number, string[]][];
const byScript = new Map<string, { calls: number; micros: number }>();
for (const [, , micros, args] of entries) {
  const [command = '', sha = ''] = args;
  if (!/^evalsha$/i.test(command) && !/^eval$/i.test(command)) continue;
  const name = /^evalsha$/i.test(command)
    ? (names.get(sha) ?? `rate-limiter-flexible ${sha.slice(0, 8)}`)
    : 'eval';
  const total = byScript.get(name) ?? { calls: 0, micros: 0 };
  total.calls += 1;
  total.micros += Number(micros);
  byScript.set(name, total);
}
const all = [...byScript.values()].reduce((sum, { micros }) => sum + micros, 0);
console.log(`${entries.length} slowlog entries`);
for (const [name, { calls, micros }] of [...byScript].sort((a, b) => b[1].micros - a[1].micros)) {
  console.log(
    `${name.padEnd(34)} ${String(calls).padStart(7)} calls ${(micros / calls).toFixed(1).padStart(7)} µs each ${((100 * micros) / all).toFixed(1).padStart(5)} %`,
  );
}
redis.disconnect();
