import { readFile } from 'node:fs/promises';

/** Loads `.lua` files as a module whose default export is the script's text (as the build does). */
export async function load(url, context, nextLoad) {
  if (!url.endsWith('.lua')) return nextLoad(url, context);
  const source = await readFile(new URL(url), 'utf8');
  return { format: 'module', source: `export default ${JSON.stringify(source)};`, shortCircuit: true };
}
