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
 * caller stops early (`break`, `return`, a throw), the upstream request is aborted and what was
 * generated is billed as an estimate.
 */
export function tapStream<S extends SdkStream>(
  stream: S,
  call: TrackedCall,
  endpoint: Endpoint,
  hides: (event: unknown) => boolean,
  client: unknown,
): S {
  async function* tapped(): AsyncGenerator<unknown> {
    let readToEnd = false;
    try {
      for await (const event of stream) {
        call.saw(endpoint.readEvent(event));
        if (hides(event)) continue;
        yield event;
      }
      readToEnd = true;
    } finally {
      call.streamEnded(readToEnd);
    }
  }
  const SameStream = stream.constructor as StreamConstructor;
  return new SameStream(() => tapped(), stream.controller, client) as S;
}
