import type { RunningExample } from './start.js';

const LABELS = { dodo: 'Dodo Payments', upstream: 'Upstream LLM', store: 'Store' } as const;
/** Real services in capitals: they move real money or cost real tokens. */
const KINDS: Record<string, string> = { real: 'REAL', redis: 'Redis' };

/** One line per part: real or standing in, what it is, and which variables chose it. */
export function partLines(example: Pick<RunningExample, 'wiring' | 'config'>): string[] {
  const lines = Object.entries(example.wiring.parts).map(([name, part]) => {
    const label = LABELS[name as keyof typeof LABELS].padEnd(15);
    return `  ${label}${(KINDS[part.kind] ?? part.kind).padEnd(10)}${part.description}`;
  });
  for (const variable of example.config.ignored) lines.push(`  ${'Ignored'.padEnd(15)}${variable}`);
  return lines;
}

/** What `npm start` prints: where it listens, which parts are real, the demo key, and snippets that work as printed. */
export function banner(example: RunningExample): string {
  const { url, embedded } = example;
  const lines = [
    '',
    'express-llm-billing example proxy',
    '',
    ...partLines(example),
    '',
    `  Listening on   ${url}`,
    `  Metrics        ${url}/metrics  (Prometheus)`,
  ];
  if (!embedded) {
    lines.push(`  Status page    ${url}/  (paste an API key from API_KEYS)`, '');
    return lines.join('\n');
  }
  const key = embedded.demo.apiKey;
  lines.push(
    `  Status page    ${url}/#key=${key}`,
    `  Demo API key   ${key}`,
    `                 (Dodo customer ${embedded.demo.customerId}, $5.00 of credits, usage tier 1: 3 requests/min)`,
    '',
    'Chat completion:',
    '',
    `  curl ${url}/v1/chat/completions \\`,
    `    -H "Authorization: Bearer ${key}" \\`,
    `    -H "Content-Type: application/json" \\`,
    `    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello!"}]}'`,
    '',
    'Balance, tier and usage this period:',
    '',
    `  curl ${url}/billing/balance -H "Authorization: Bearer ${key}"`,
    '',
    'Top up $5 (open the checkout_url it answers in a browser and press Pay):',
    '',
    `  curl ${url}/billing/top-up -H "Authorization: Bearer ${key}" \\`,
    `    -H "Content-Type: application/json" -d '{"pack":5}'`,
    '',
    'With the openai npm client, streaming (run it from this directory):',
    '',
    `  node --input-type=module -e '`,
    `  import OpenAI from "openai";`,
    `  const client = new OpenAI({ apiKey: "${key}", baseURL: "${url}/v1" });`,
    `  const stream = await client.chat.completions.create({`,
    `    model: "gpt-4o",`,
    `    messages: [{ role: "user", content: "Say hello" }],`,
    `    stream: true,`,
    `    stream_options: { include_usage: true },`,
    `  });`,
    `  for await (const chunk of stream) {`,
    `    process.stdout.write(chunk.choices[0]?.delta?.content ?? "");`,
    `    if (chunk.usage) console.log("\\n", chunk.usage);`,
    `  }'`,
    '',
    'Stop with Ctrl-C.',
    '',
  );
  return lines.join('\n');
}
