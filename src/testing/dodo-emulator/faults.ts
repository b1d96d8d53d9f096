import { DodoEmulatorError } from './errors.js';

/** What to do to requests of a route. Combine `delayMs` with `status` for a slow error. */
export interface FaultSpec {
  /** Answer with this status (and `body`, default `{ code: "EMULATED_FAULT", message }`). */
  status?: number;
  body?: unknown;
  /** Wait this long before answering (or before the other fault). */
  delayMs?: number;
  /** Never answer (the connection stays open until the client gives up or `close()`). */
  hang?: boolean;
  /** Destroy the connection without an answer. */
  drop?: boolean;
  /**
   * Apply the fault after the request took effect: the change is made, only the answer is
   * late, lost or replaced — what a caller whose deadline passed cannot tell from a request
   * that never arrived. Default: before (the request changes nothing).
   */
  afterProcessing?: boolean;
  /** How many requests the fault applies to. Default: all, until `clearFaults()`. */
  times?: number;
}

interface Fault {
  method: string | undefined;
  path: string;
  spec: FaultSpec;
  left: number;
}

/**
 * Faults per route. A route is written `'POST /events/ingest'`, `'GET
 * /credit-entitlements/{id}/balances/{customer_id}'` (the route's pattern, `:name` works too),
 * a concrete path (`'GET /credit-entitlements/cde_1/balances/cus_1'`), a path without method
 * (any method), or `'*'` (every request).
 */
export class Faults {
  private faults: Fault[] = [];

  add(route: string, spec: FaultSpec): void {
    if (typeof route !== 'string' || route.trim() === '') {
      throw new DodoEmulatorError(
        `fault: route must be like 'POST /events/ingest' or '*' (got ${String(route)}).`,
      );
    }
    const effects = ['status', 'delayMs', 'hang', 'drop'].filter(
      (name) => spec[name as keyof FaultSpec] !== undefined,
    );
    if (effects.length === 0)
      throw new DodoEmulatorError('fault: give at least one of status, delayMs, hang or drop.');
    if (
      spec.status !== undefined &&
      (!Number.isInteger(spec.status) || spec.status < 100 || spec.status > 599)
    ) {
      throw new DodoEmulatorError(`fault: status must be an HTTP status 100–599 (got ${spec.status}).`);
    }
    if (spec.delayMs !== undefined && !(spec.delayMs >= 0))
      throw new DodoEmulatorError('fault: delayMs must be >= 0.');
    if (spec.times !== undefined && (!Number.isInteger(spec.times) || spec.times < 1)) {
      throw new DodoEmulatorError(`fault: times must be an integer >= 1 (got ${spec.times}).`);
    }
    const [first = '', second] = route.trim().split(/\s+/);
    const method = second === undefined ? undefined : first.toUpperCase();
    const path = normalize(second ?? first);
    this.faults.push({ method, path, spec, left: spec.times ?? Number.POSITIVE_INFINITY });
  }

  clear(): void {
    this.faults = [];
  }

  /** The fault for this request, if any (counting it against `times`). */
  take(method: string, pattern: string | undefined, path: string): FaultSpec | undefined {
    const concrete = normalize(path);
    const fault = this.faults.find(
      (candidate) =>
        candidate.left > 0 &&
        (candidate.method === undefined || candidate.method === method) &&
        (candidate.path === '*' ||
          candidate.path === concrete ||
          (pattern !== undefined && candidate.path === pattern)),
    );
    if (!fault) return undefined;
    fault.left -= 1;
    return fault.spec;
  }
}

function normalize(path: string): string {
  if (path === '*') return path;
  const clean = path.replace(/\/+$/, '') || '/';
  return clean.replace(/:([A-Za-z_][A-Za-z0-9_]*)/g, '{$1}');
}
