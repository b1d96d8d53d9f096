import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { ApiError } from './errors.js';
import type { FaultSpec, Faults } from './faults.js';
import type { Reply, Router } from './router.js';

/** One request the emulator answered (for tests that count calls). */
export interface LoggedRequest {
  method: string;
  path: string;
  /** The answered status; undefined when a fault hung or dropped the connection. */
  status: number | undefined;
  fault: boolean;
}

export interface ServerSettings {
  host: string;
  port: number;
  apiKey: string;
  router: Router;
  faults: Faults;
  log: LoggedRequest[];
}

const MAX_BODY_BYTES = 10 * 1024 * 1024;

/** The emulator's HTTP server: auth, faults, JSON in and out, Dodo's error shape. */
export class EmulatorServer {
  private readonly server: http.Server;
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(private readonly settings: ServerSettings) {
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((error: unknown) => {
        if (!res.headersSent)
          send(res, { status: 500, json: { code: 'INTERNAL_SERVER_ERROR', message: String(error) } });
      });
    });
  }

  async listen(): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.settings.port, this.settings.host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    const { address, port } = this.server.address() as AddressInfo;
    const host = address.includes(':') ? `[${address}]` : address;
    return `http://${host}:${port}`;
  }

  async close(): Promise<void> {
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    // Hung requests and keep-alive sockets would hold close() open: end them.
    this.server.closeAllConnections();
    await closed;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        resolve();
      }, ms);
      this.timers.add(timer);
    });
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://emulator');
    const method = (req.method ?? 'GET').toUpperCase();
    const path = url.pathname;
    const { router, faults, log } = this.settings;
    const entry: LoggedRequest = { method, path, status: undefined, fault: false };
    log.push(entry);
    const deliver = (reply: Reply) => {
      entry.status = reply.status ?? ('redirect' in reply ? 303 : 200);
      send(res, reply);
    };
    let answer = deliver;

    const fault = faults.take(method, router.patternOf(path), path);
    if (fault) {
      entry.fault = true;
      if (fault.afterProcessing) {
        // The request takes effect; only its answer is late, lost or replaced.
        answer = (reply) => {
          void this.applyFault(fault, req, deliver).then((answered) => {
            if (!answered) deliver(reply);
          });
        };
      } else if (await this.applyFault(fault, req, answer)) return;
    }

    const match = router.match(method, path);
    if (!match) return answer(error(new ApiError(404, 'NOT_FOUND', `No route ${method} ${path}.`)));
    if ('allowed' in match) {
      res.setHeader('allow', match.allowed.join(', '));
      return answer(error(new ApiError(405, 'METHOD_NOT_ALLOWED', `${method} is not allowed on ${path}.`)));
    }
    if (match.route.auth && req.headers.authorization !== `Bearer ${this.settings.apiKey}`) {
      req.resume();
      return answer(
        error(
          new ApiError(
            401,
            'UNAUTHORIZED',
            'Missing or invalid API key: send Authorization: Bearer <api key>.',
          ),
        ),
      );
    }
    try {
      const body = await readBody(req);
      const reply = await match.route.handler({
        method,
        path,
        params: match.params,
        query: url.searchParams,
        body,
      });
      answer(reply);
    } catch (caught) {
      if (caught instanceof ApiError) return answer(error(caught));
      answer(
        error(
          new ApiError(
            500,
            'INTERNAL_SERVER_ERROR',
            caught instanceof Error ? caught.message : String(caught),
          ),
        ),
      );
    }
  }

  /** Applies a fault; true when it answered (or hung, or dropped) the request. */
  private async applyFault(
    fault: FaultSpec,
    req: http.IncomingMessage,
    answer: (reply: Reply) => void,
  ): Promise<boolean> {
    if (fault.delayMs) await this.sleep(fault.delayMs);
    if (fault.drop) {
      req.socket.destroy();
      return true;
    }
    if (fault.hang) {
      req.resume();
      return true;
    }
    if (fault.status !== undefined) {
      req.resume();
      answer({
        status: fault.status,
        json: fault.body ?? {
          code: 'EMULATED_FAULT',
          message: `Fault injected by the Dodo emulator (${fault.status}).`,
        },
      });
      return true;
    }
    return false;
  }
}

function error(caught: ApiError): Reply {
  return { status: caught.status, json: { code: caught.code, message: caught.message } };
}

function send(res: http.ServerResponse, reply: Reply): void {
  if (res.headersSent || res.destroyed) return;
  if ('redirect' in reply) {
    res.writeHead(reply.status ?? 303, { location: reply.redirect });
    res.end();
  } else if ('html' in reply) {
    res.writeHead(reply.status ?? 200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(reply.html);
  } else if ('empty' in reply) {
    res.writeHead(reply.status);
    res.end();
  } else {
    res.writeHead(reply.status ?? 200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(reply.json));
  }
}

async function readBody(req: http.IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES)
      throw new ApiError(413, 'PAYLOAD_TOO_LARGE', 'Request body is larger than 10 MB.');
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') return undefined;
  const type = req.headers['content-type'] ?? '';
  if (type.includes('application/x-www-form-urlencoded'))
    return Object.fromEntries(new URLSearchParams(text));
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(400, 'INVALID_JSON', 'The request body is not valid JSON.');
  }
}
