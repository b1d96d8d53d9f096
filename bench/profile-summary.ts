import { readFileSync } from 'node:fs';

/**
 * Where a `--cpu-prof` profile spent its time, heaviest first: by function (self time), then
 * the package's own functions with everything they called (total time):
 * `tsx bench/profile-summary.ts <dir>/memory-1/CPU.….0.001.cpuprofile [top]`.
 */
interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const [file, top = '40'] = process.argv.slice(2);
if (!file) throw new Error('usage: tsx bench/profile-summary.ts <file.cpuprofile> [top]');
const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
const nodes = new Map(profile.nodes.map((node) => [node.id, node]));
const parentOf = new Map<number, number>();
for (const node of profile.nodes) for (const child of node.children ?? []) parentOf.set(child, node.id);

function nameOf(node: ProfileNode): string {
  const { functionName, url, lineNumber } = node.callFrame;
  const where = url.replace(/^.*node_modules\//, '').replace(/^.*\/(dist|src)\//, '$1/');
  return `${functionName || '(anonymous)'} ${where}:${lineNumber + 1}`;
}

const selfMicros = new Map<string, number>();
const totalMicros = new Map<string, number>();
let busy = 0;
profile.samples.forEach((id, index) => {
  const delta = profile.timeDeltas[index] ?? 0;
  const node = nodes.get(id)!;
  const name = nameOf(node);
  if (name.startsWith('(idle)')) return;
  busy += delta;
  selfMicros.set(name, (selfMicros.get(name) ?? 0) + delta);
  // Each function on the sampled stack is charged once, however deep it recurses.
  const onStack = new Set<string>();
  for (let at: number | undefined = id; at !== undefined; at = parentOf.get(at)) {
    const frame = nodes.get(at)!;
    if (frame.callFrame.url.includes('/dist/')) onStack.add(nameOf(frame));
  }
  for (const frame of onStack) totalMicros.set(frame, (totalMicros.get(frame) ?? 0) + delta);
});

const percent = (micros: number) => `${((100 * micros) / busy).toFixed(1).padStart(5)} %`;
const heaviest = (times: Map<string, number>) => [...times].sort((a, b) => b[1] - a[1]).slice(0, Number(top));
console.log(`busy ${(busy / 1000).toFixed(0)} ms\n\nself time:`);
for (const [name, micros] of heaviest(selfMicros)) console.log(`${percent(micros)}  ${name}`);
console.log('\ntotal time of the package’s own functions (dist/):');
for (const [name, micros] of heaviest(totalMicros)) console.log(`${percent(micros)}  ${name}`);
