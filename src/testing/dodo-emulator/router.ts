/** A parsed request, as handlers see it. */
export interface Request {
  method: string;
  path: string;
  params: Record<string, string>;
  query: URLSearchParams;
  body: unknown;
}

/** A handler's answer: JSON (default status 200), HTML, or a redirect. */
export type Reply =
  | { status?: number; json: unknown }
  | { status?: number; html: string }
  | { status?: number; redirect: string }
  | { status: number; empty: true };

export type Handler = (request: Request) => Reply | Promise<Reply>;

interface Route {
  method: string;
  pattern: string;
  segments: string[];
  handler: Handler;
  auth: boolean;
}

/** Method + `{param}` path patterns → handlers. */
export class Router {
  private readonly routes: Route[] = [];

  add(method: string, pattern: string, handler: Handler, options: { auth?: boolean } = {}): void {
    this.routes.push({ method, pattern, segments: split(pattern), handler, auth: options.auth ?? true });
  }

  /** The route for a request, or which methods the path allows (405), or nothing (404). */
  match(
    method: string,
    path: string,
  ): { route: Route; params: Record<string, string> } | { allowed: string[] } | undefined {
    const segments = split(path);
    const allowed: string[] = [];
    for (const route of this.routes) {
      const params = bind(route.segments, segments);
      if (!params) continue;
      if (route.method === method) return { route, params };
      allowed.push(route.method);
    }
    return allowed.length > 0 ? { allowed } : undefined;
  }

  /** The pattern a path belongs to (for faults), e.g. `/events/{event_id}`. */
  patternOf(path: string): string | undefined {
    const segments = split(path);
    return this.routes.find((route) => bind(route.segments, segments))?.pattern;
  }
}

function split(path: string): string[] {
  return path.split('/').filter((segment) => segment !== '');
}

function bind(pattern: string[], segments: string[]): Record<string, string> | undefined {
  if (pattern.length !== segments.length) return undefined;
  const params: Record<string, string> = {};
  for (const [index, part] of pattern.entries()) {
    const segment = segments[index] as string;
    if (part.startsWith('{') && part.endsWith('}')) {
      try {
        params[part.slice(1, -1)] = decodeURIComponent(segment);
      } catch {
        return undefined;
      }
    } else if (part !== segment) {
      return undefined;
    }
  }
  return params;
}
