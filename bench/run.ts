import { type ChildProcess, fork } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { Redis } from 'ioredis';
import { startRedisServer } from '../test/support/redis.js';

/**
 * `npm run bench`: the billing chain on MemoryStore and on RedisStore against bare Express, with
 * two baselines side by side in one run — a handler answering at once (`bare`: the overhead
 * itself) and one proxying through the `openai` SDK to a mock LLM (`bare-proxy`: what users run)
 * — and the naive design of Dodo's guide (an awaited Dodo call before and after each request).
 * `BENCH_VARIANTS` picks others: `only-<tier|softcap|credits|meter|money>` (one middleware), and
 * `<variant>@<label>` runs a variant on an earlier build copied to `.bench-builds/<label>/` (to
 * measure a change against what it replaces, in one run).
 * Variants alternate, ROUNDS times; the report gives medians: throughput and its ratio to the
 * variant's own baseline, p99 latency, the server's CPU per request, Redis's CPU and commands per
 * request (`INFO commandstats`), the Dodo calls made and the usage events delivered.
 */
const VARIANTS = (
  process.env.BENCH_VARIANTS ?? 'bare,memory,redis,bare-proxy,memory-proxy,redis-proxy,naive'
).split(',');
/**
 * A Redis of the bench's own (a `redis-server` on a free port, stopped at the end), so that
 * `INFO commandstats` counts this run's commands only, never another process's; `REDIS_URL`
 * uses that one instead.
 */
const ownRedis = process.env.REDIS_URL ? undefined : await startRedisServer();
const REDIS_URL = process.env.REDIS_URL ?? ownRedis!.url;
process.env.REDIS_URL = REDIS_URL; // the servers it forks connect to the same one
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const DURATION_S = Number(process.env.BENCH_DURATION ?? 5);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
/** A folder to write each server's `--cpu-prof` profile to (`--heap-prof`, sampled allocations, with `BENCH_PROFILE=heap`) (one folder per variant and round; the main thread's is the largest file; see `bench/profile-summary.ts`). */
const PROFILE_DIR = process.env.BENCH_PROFILE_DIR;
const CUSTOMERS = 100;

interface Ready {
  type: 'ready';
  [key: string]: unknown;
}

function start(
  script: string,
  args: string[],
  nodeOptions: string[] = [],
): Promise<{ child: ChildProcess; ready: Ready }> {
  const child = fork(fileURLToPath(new URL(script, import.meta.url)), args, {
    execArgv: [
      ...nodeOptions,
      '--import',
      'tsx',
      '--import',
      fileURLToPath(new URL('../tools/register-lua.mjs', import.meta.url)),
    ],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  return new Promise((resolve, reject) => {
    child.once('message', (ready: Ready) => resolve({ child, ready }));
    child.once('exit', (code) => reject(new Error(`${script} exited with ${code}`)));
  });
}

function ask<T>(child: ChildProcess, type: string): Promise<T> {
  return new Promise((resolve) => {
    child.once('message', resolve as (value: unknown) => void);
    child.send({ type });
  });
}

async function cpuMicros(port: number): Promise<number> {
  const usage = (await (await fetch(`http://127.0.0.1:${port}/__cpu`)).json()) as {
    user: number;
    system: number;
  };
  return usage.user + usage.system;
}

function load(port: number, customerIds: string[], durationS: number): Promise<autocannon.Result> {
  let next = 0;
  return autocannon({
    url: `http://127.0.0.1:${port}/v1/chat/completions`,
    connections: CONNECTIONS,
    duration: durationS,
    requests: [
      {
        method: 'POST',
        setupRequest: (request) => ({
          ...request,
          headers: {
            'content-type': 'application/json',
            'x-customer': customerIds[next++ % customerIds.length]!,
          },
          body: JSON.stringify({
            model: 'gpt-4o',
            messages: [{ role: 'user', content: 'Say hello to the benchmark, briefly please.' }],
            max_tokens: 64,
          }),
        }),
      },
    ],
  });
}

interface Run {
  variant: string;
  round: number;
  requestsPerSecond: number;
  p99Ms: number;
  cpuMicrosPerRequest: number;
  non2xx: number;
  balanceCalls: number;
  ingestCalls: number;
  requests: number;
  /** The Redis server's own CPU per request (`INFO cpu`: user + system); 0 off Redis. */
  redisMicrosPerRequest: number;
  /** Script calls (EVALSHA, EVAL) per request: the store's round trips, each one script. */
  redisScriptsPerRequest: number;
  /** Time spent running those scripts per request (`INFO commandstats`), the Lua work itself. */
  redisScriptMicrosPerRequest: number;
  /** Usage events Dodo had accepted 2 s after the load, per event the requests owed. */
  eventsDelivered: number;
}

/**
 * The Redis server's CPU so far (`INFO cpu`), and its script calls with the time they ran
 * (`INFO commandstats`). Commandstats also lists each command a script runs, with time already
 * counted in the script's own: summing every line would count it twice, so only the scripts are
 * read from it. The bench's own Redis serves nobody else.
 */
async function redisStats(
  redis: Redis,
): Promise<{ cpuMicros: number; scripts: number; scriptMicros: number }> {
  const [cpu, commands] = await Promise.all([redis.info('cpu'), redis.info('commandstats')]);
  const seconds = (name: string) => Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(cpu)?.[1] ?? 0);
  let scripts = 0;
  let scriptMicros = 0;
  for (const match of commands.matchAll(/^cmdstat_(?:evalsha|eval):calls=(\d+),usec=(\d+)/gm)) {
    scripts += Number(match[1]);
    scriptMicros += Number(match[2]);
  }
  return { cpuMicros: (seconds('used_cpu_user') + seconds('used_cpu_sys')) * 1e6, scripts, scriptMicros };
}
const redis = new Redis(REDIS_URL);

interface Calls {
  balance: number;
  ingest: number;
  events: number;
}
const usesRedis = (variant: string) => variant.startsWith('redis');

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

const dodo = await start('./emulator-process.ts', [String(CUSTOMERS)]);
const { baseURL, upstreamURL, apiKey, entitlementId, customerIds } = dodo.ready as unknown as {
  baseURL: string;
  upstreamURL: string;
  apiKey: string;
  entitlementId: string;
  customerIds: string[];
};
const runs: Run[] = [];
try {
  for (let round = 1; round <= ROUNDS; round++) {
    for (const variant of VARIANTS) {
      const server = await start(
        './server-process.ts',
        [variant, baseURL, apiKey, entitlementId, upstreamURL],
        PROFILE_DIR
          ? process.env.BENCH_PROFILE === 'heap'
            ? [
                '--heap-prof',
                '--heap-prof-interval=16384',
                `--heap-prof-dir=${PROFILE_DIR}/${variant}-${round}`,
              ]
            : ['--cpu-prof', `--cpu-prof-dir=${PROFILE_DIR}/${variant}-${round}`]
          : [],
      );
      const port = server.ready.port as number;
      const beforeWarmUp = await ask<Calls>(dodo.child, 'calls');
      const warmUp = await load(port, customerIds, 1); // JIT, first balance fetch per customer
      const callsBefore = await ask<Calls>(dodo.child, 'calls');
      const cpuBefore = await cpuMicros(port);
      const redisBefore = await redisStats(redis);
      const result = await load(port, customerIds, DURATION_S);
      const cpuAfter = await cpuMicros(port);
      const redisAfter = await redisStats(redis);
      const callsAfter = await ask<Calls>(dodo.child, 'calls');
      // What the flusher delivers within 2 s of the load: it must keep its share under load.
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      const delivered = await ask<Calls>(dodo.child, 'calls');
      // Two events per request, warm-up included (its events leave during the measured run).
      const owed = variant.startsWith('bare') ? 0 : 2 * (warmUp.requests.total + result.requests.total);
      // SIGINT lets the server exit normally, so `--cpu-prof` writes its profile.
      server.child.kill('SIGINT');
      const perRequest = (amount: number) =>
        usesRedis(variant) ? amount / Math.max(1, result.requests.total) : 0;
      const run: Run = {
        variant,
        round,
        requestsPerSecond: result.requests.average,
        p99Ms: result.latency.p99,
        cpuMicrosPerRequest: (cpuAfter - cpuBefore) / Math.max(1, result.requests.total),
        non2xx: result.non2xx,
        balanceCalls: callsAfter.balance - callsBefore.balance,
        ingestCalls: callsAfter.ingest - callsBefore.ingest,
        requests: result.requests.total,
        redisMicrosPerRequest: perRequest(redisAfter.cpuMicros - redisBefore.cpuMicros),
        redisScriptsPerRequest: perRequest(redisAfter.scripts - redisBefore.scripts),
        redisScriptMicrosPerRequest: perRequest(redisAfter.scriptMicros - redisBefore.scriptMicros),
        eventsDelivered: owed === 0 ? 1 : (delivered.events - beforeWarmUp.events) / owed,
      };
      runs.push(run);
      console.log(
        `round ${round} ${variant.padEnd(7)} ${run.requestsPerSecond.toFixed(0).padStart(7)} req/s  p99 ${run.p99Ms} ms  ` +
          `${run.cpuMicrosPerRequest.toFixed(0)} µs CPU/req  Redis ${run.redisMicrosPerRequest.toFixed(0)} µs CPU, ${run.redisScriptsPerRequest.toFixed(2)} scripts (${run.redisScriptMicrosPerRequest.toFixed(0)} µs)/req  ` +
          `non-2xx ${run.non2xx}  Dodo: ${run.balanceCalls} balance, ${run.ingestCalls} ingest, ${(run.eventsDelivered * 100).toFixed(0)} % events delivered`,
      );
    }
  }
} finally {
  dodo.child.send({ type: 'close' });
  redis.disconnect();
  await ownRedis?.stop();
}

const summary = VARIANTS.map((variant) => {
  const of = runs.filter((run) => run.variant === variant);
  return {
    variant,
    requestsPerSecond: median(of.map((run) => run.requestsPerSecond)),
    p99Ms: median(of.map((run) => run.p99Ms)),
    cpuMicrosPerRequest: median(of.map((run) => run.cpuMicrosPerRequest)),
    redisMicrosPerRequest: median(of.map((run) => run.redisMicrosPerRequest)),
    redisScriptsPerRequest: median(of.map((run) => run.redisScriptsPerRequest)),
    redisScriptMicrosPerRequest: median(of.map((run) => run.redisScriptMicrosPerRequest)),
    eventsDelivered: median(of.map((run) => run.eventsDelivered)),
    requestsPerIngestCall: median(of.map((run) => run.requests / Math.max(1, run.ingestCalls))),
    balanceCallsPerRun: median(of.map((run) => run.balanceCalls)),
    non2xx: of.reduce((sum, run) => sum + run.non2xx, 0),
  };
});
/** Each variant is compared with bare Express of its own family (`bare`, or `bare-proxy`). */
const baselineOf = (variant: string) =>
  variant.replace(/@.*$/, '').endsWith('-proxy') ? 'bare-proxy' : 'bare';
/**
 * `variant`'s throughput over `other`'s, as the median of their ratios round by round: each
 * round runs the two a few seconds apart, so a machine whose speed drifts (a shared VM's does,
 * by tens of percent over minutes) moves both, and the drift cancels out of the ratio.
 */
const pairedRatio = (variant: string, other: string) =>
  median(
    Array.from({ length: ROUNDS }, (_, index) => {
      const rate = (name: string) =>
        runs.find((run) => run.variant === name && run.round === index + 1)?.requestsPerSecond ?? Number.NaN;
      return rate(variant) / rate(other);
    }),
  );
const ratio = (variant: string) => pairedRatio(variant, baselineOf(variant));
console.log(
  `\nMedians of ${ROUNDS} rounds, ${DURATION_S} s each, ${CONNECTIONS} connections, ${CUSTOMERS} customers:\n`,
);
console.log(
  '| variant | req/s | × its baseline | p99 ms | server CPU µs/req | Redis CPU µs/req | Redis scripts/req | script µs/req | events delivered | requests per ingest call | balance calls/run | non-2xx |',
);
console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
for (const row of summary) {
  const redisColumns = usesRedis(row.variant)
    ? `${row.redisMicrosPerRequest.toFixed(0)} | ${row.redisScriptsPerRequest.toFixed(2)} | ${row.redisScriptMicrosPerRequest.toFixed(0)}`
    : '— | — | —';
  const billed = !row.variant.startsWith('bare');
  console.log(
    `| ${row.variant} | ${row.requestsPerSecond.toFixed(0)} | ${ratio(row.variant).toFixed(2)} | ${row.p99Ms} | ` +
      `${row.cpuMicrosPerRequest.toFixed(0)} | ${redisColumns} | ${billed ? `${(row.eventsDelivered * 100).toFixed(0)} %` : '—'} | ` +
      `${billed && row.variant !== 'naive' ? row.requestsPerIngestCall.toFixed(0) : '—'} | ${row.balanceCallsPerRun} | ${row.non2xx} |`,
  );
}

/** The targets, each against its own baseline, measured in this run. */
const TARGETS: [string, number][] = [
  ['memory', 0.8],
  ['redis', 0.6],
  ['memory-proxy', 0.95],
  ['redis-proxy', 0.9],
];
const measured = TARGETS.filter(
  ([variant]) => VARIANTS.includes(variant) && VARIANTS.includes(baselineOf(variant)),
);
if (measured.length > 0) {
  console.log('\n| target | measured | met |');
  console.log('| --- | --- | --- |');
  for (const [variant, target] of measured) {
    const value = ratio(variant);
    console.log(
      `| ${variant} ≥ ${target.toFixed(2)}× ${baselineOf(variant)} | ${value.toFixed(2)}× | ${value >= target ? 'yes' : 'no'} |`,
    );
  }
  if (VARIANTS.includes('naive')) {
    for (const variant of ['memory', 'redis'].filter((name) => VARIANTS.includes(name))) {
      const times = pairedRatio(variant, 'naive');
      console.log(`| ${variant} ≥ 5× naive | ${times.toFixed(1)}× | ${times >= 5 ? 'yes' : 'no'} |`);
    }
  }
}
/** `<variant>@<label>` beside `<variant>`: what the change since that build bought, round by round. */
const compared = VARIANTS.filter((name) => name.includes('@') && VARIANTS.includes(name.replace(/@.*$/, '')));
if (compared.length > 0) {
  console.log('\n| this build against an earlier one | req/s × (median of per-round ratios) |');
  console.log('| --- | --- |');
  for (const earlier of compared) {
    const now = earlier.replace(/@.*$/, '');
    console.log(`| ${now} / ${earlier} | ${pairedRatio(now, earlier).toFixed(2)}× |`);
  }
}
await writeFile(
  new URL('./results.json', import.meta.url),
  `${JSON.stringify({ runs, summary }, null, 2)}\n`,
);
