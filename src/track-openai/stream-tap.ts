import type { Endpoint } from './endpoint.js';
import type { TrackedCall } from './tracked-call.js';

/** The SDK's `Stream`: iterable, with the `AbortController` of its request. */
interface SdkStream extends AsyncIterable<unknown> {
  controller?: AbortController;
}

type StreamConstructor = new (
  iterator: () => AsyncIterator<unknown>,
  controller: AbortController | undefined,
  client?: unknown,
) => unknown;

export function isStream(value: unknown): value is SdkStream {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as Partial<AsyncIterable<unknown>>)[Symbol.asyncIterator] === 'function'
  );
}

/**
 * A stream of the same class (`Stream` of the `openai` SDK, so `.controller`, `.tee()`,
 * `.toReadableStream()` keep working) whose events go to the caller as they arrive — nothing
 * buffered, nothing rewritten — while the call reads its usage and counts what was generated.
 * Events `hides` matches (the usage chunk tracking asked for) are read, not passed on. When the
 * caller stops early (`break`, `return`, a throw), the rest of the stream is read in the
 * background to the usage the upstream bills (see `TrackedCall.abandoned`).
 */
export function tapStream<S extends SdkStream>(
  stream: S,
  call: TrackedCall,
  endpoint: Endpoint,
  hides: (event: unknown) => boolean,
  client: unknown,
): S {
  async function* tapped(): AsyncGenerator<unknown> {
    // The stream's own iterator, held by hand: leaving a `for await` would abort the upstream.
    const events = stream[Symbol.asyncIterator]();
    let readToEnd = false;
    let failed = false;
    try {
      for (;;) {
        let next: IteratorResult<unknown>;
        try {
          next = await events.next();
        } catch (error) {
          failed = true;
          throw error;
        }
        if (next.done) break;
        call.saw(endpoint.readEvent(next.value));
        if (hides(next.value)) continue;
        yield next.value;
      }
      readToEnd = true;
    } finally {
      if (readToEnd || failed) call.streamEnded(readToEnd);
      else call.abandoned(events, (event) => endpoint.readEvent(event));
    }
  }
  const SameStream = stream.constructor as StreamConstructor;
  return new SameStream(() => tapped(), stream.controller, client) as S;
}
