/**
 * Walks a parsed JSON request body without recursion, within bounds, so that no body — however
 * deep or wide — can overflow the stack or keep the event loop busy: a hostile body is refused
 * with a clear 400 instead of crashing the process (Express 4 does not catch a rejected
 * middleware promise).
 */

/** Nesting deeper than this is refused. OpenAI's own shapes nest fewer than 12 levels. */
export const MAX_BODY_DEPTH = 64;
/** More values than this in one body is refused (a 16 MiB body of `[0,0,…]` has ~8M). */
export const MAX_BODY_NODES = 500_000;

/** A body the walk refuses, with the reason a client can act on. */
export class BodyShapeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BodyShapeError';
  }
}

/** What a visitor is told of each value: the value, the key it sits under, and its parent. */
export interface Visit {
  value: unknown;
  key: string | undefined;
  depth: number;
}

/**
 * Calls `visit` for every value of `root` (objects before their children, depth first). A
 * visitor returns `false` to skip the children of an object or array. Throws `BodyShapeError`
 * past `MAX_BODY_DEPTH` levels or `MAX_BODY_NODES` values.
 */
export function walkBody(root: unknown, visit: (entry: Visit) => boolean | undefined): void {
  const stack: Visit[] = [{ value: root, key: undefined, depth: 0 }];
  let nodes = 0;
  while (stack.length > 0) {
    const entry = stack.pop()!;
    nodes += 1;
    if (nodes > MAX_BODY_NODES) {
      throw new BodyShapeError(`The request body holds more than ${MAX_BODY_NODES} values.`);
    }
    if (visit(entry) === false) continue;
    const { value, depth } = entry;
    if (value === null || typeof value !== 'object') continue;
    if (depth >= MAX_BODY_DEPTH) {
      throw new BodyShapeError(`The request body is nested more than ${MAX_BODY_DEPTH} levels deep.`);
    }
    if (Array.isArray(value)) {
      for (let index = value.length - 1; index >= 0; index -= 1) {
        stack.push({ value: value[index], key: undefined, depth: depth + 1 });
      }
    } else {
      const keys = Object.keys(value);
      for (let index = keys.length - 1; index >= 0; index -= 1) {
        const key = keys[index]!;
        stack.push({ value: (value as Record<string, unknown>)[key], key, depth: depth + 1 });
      }
    }
  }
}
