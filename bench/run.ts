import { type ChildProcess, fork } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';

/**
 * `npm run bench`: bare Express, the full billing stack on MemoryStore and on RedisStore, and
 * the seed's naive design (an awaited Dodo call before and after each request), side by side in
 * one run. `BENCH_VARIANTS` picks others: `only-<tier|softcap|credits|meter|money>` (one
 * middleware), or `<variant>-upstream` (the handler proxies to a mock LLM with the openai SDK). Variants alternate, ROUNDS times; the report gives medians, the throughput ratio to
 * bare Express, p99 latency, the server's CPU time per request and the Dodo calls made.
 */
const VARIANTS = (process.env.BENCH_VARIANTS ?? 'bare,memory,redis,naive').split(',');
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const DURATION_S = Number(process.env.BENCH_DURATION ?? 5);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
/** A folder to write each server's `--cpu-prof` profile to (one folder per variant and round; the main thread's is the largest file; see `bench/profile-summary.ts`). */
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
  requestsPerSecond: number;
  p99Ms: number;
  cpuMicrosPerRequest: number;
  non2xx: number;
  balanceCalls: number;
  ingestCalls: number;
  requests: number;
}

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
        PROFILE_DIR ? ['--cpu-prof', `--cpu-prof-dir=${PROFILE_DIR}/${variant}-${round}`] : [],
      );
      const port = server.ready.port as number;
      await load(port, customerIds, 1); // warm-up: JIT, first balance fetch per customer
      const callsBefore = await ask<{ balance: number; ingest: number }>(dodo.child, 'calls');
      const cpuBefore = await cpuMicros(port);
      const result = await load(port, customerIds, DURATION_S);
      const cpuAfter = await cpuMicros(port);
      const callsAfter = await ask<{ balance: number; ingest: number }>(dodo.child, 'calls');
      // SIGINT lets the server exit normally, so `--cpu-prof` writes its profile.
      server.child.kill('SIGINT');
      const run: Run = {
        variant,
        requestsPerSecond: result.requests.average,
        p99Ms: result.latency.p99,
        cpuMicrosPerRequest: (cpuAfter - cpuBefore) / Math.max(1, result.requests.total),
        non2xx: result.non2xx,
        balanceCalls: callsAfter.balance - callsBefore.balance,
        ingestCalls: callsAfter.ingest - callsBefore.ingest,
        requests: result.requests.total,
      };
      runs.push(run);
      console.log(
        `round ${round} ${variant.padEnd(7)} ${run.requestsPerSecond.toFixed(0).padStart(7)} req/s  p99 ${run.p99Ms} ms  ` +
          `${run.cpuMicrosPerRequest.toFixed(0)} µs CPU/req  non-2xx ${run.non2xx}  Dodo: ${run.balanceCalls} balance, ${run.ingestCalls} ingest`,
      );
    }
  }
} finally {
  dodo.child.send({ type: 'close' });
}

const summary = VARIANTS.map((variant) => {
  const of = runs.filter((run) => run.variant === variant);
  return {
    variant,
    requestsPerSecond: median(of.map((run) => run.requestsPerSecond)),
    p99Ms: median(of.map((run) => run.p99Ms)),
    cpuMicrosPerRequest: median(of.map((run) => run.cpuMicrosPerRequest)),
    requestsPerIngestCall: median(of.map((run) => run.requests / Math.max(1, run.ingestCalls))),
    balanceCallsPerRun: median(of.map((run) => run.balanceCalls)),
    non2xx: of.reduce((sum, run) => sum + run.non2xx, 0),
  };
});
/** Each variant is compared with bare Express of its own family (`bare`, or `bare-upstream`). */
const bareFor = (variant: string) =>
  summary.find((row) => row.variant === (variant.endsWith('-upstream') ? 'bare-upstream' : 'bare'))
    ?.requestsPerSecond ?? Number.NaN;
console.log(
  `\nMedians of ${ROUNDS} rounds, ${DURATION_S} s each, ${CONNECTIONS} connections, ${CUSTOMERS} customers:\n`,
);
console.log(
  '| variant | req/s | × bare | p99 ms | CPU µs/req | requests per ingest call | balance calls/run | non-2xx |',
);
console.log('| --- | --- | --- | --- | --- | --- | --- | --- |');
for (const row of summary) {
  console.log(
    `| ${row.variant} | ${row.requestsPerSecond.toFixed(0)} | ${(row.requestsPerSecond / bareFor(row.variant)).toFixed(2)} | ${row.p99Ms} | ` +
      `${row.cpuMicrosPerRequest.toFixed(0)} | ${row.variant.startsWith('bare') ? '—' : row.requestsPerIngestCall.toFixed(0)} | ${row.balanceCallsPerRun} | ${row.non2xx} |`,
  );
}
await writeFile(
  new URL('./results.json', import.meta.url),
  `${JSON.stringify({ runs, summary }, null, 2)}\n`,
);
