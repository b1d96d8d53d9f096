import { createMockLLM } from '../src/testing/index.js';
import { startDodo } from '../test/support/billing-app.js';

/**
 * The Dodo emulator (and the mock LLM) in a process of their own, so their CPU is neither the
 * server's nor the load generator's. It sets up a credit entitlement, GPT-4o meters on a usage
 * plan (the tests' own) and `customers` customers subscribed to it with a large balance, then answers the parent's questions over
 * IPC.
 */
const customers = Number(process.argv[2] ?? 100);
const { emulator, entitlementId, customer } = await startDodo({ meterDelayMs: 1000 });
// The upstream of the `*-proxy` variants: an OpenAI-compatible server, answering at once.
const upstream = await createMockLLM();
const customerIds = Array.from({ length: customers }, (_, i) => {
  const id = customer({ email: `bench-${i}@example.com` }).customer_id;
  emulator.setBalance(id, entitlementId, '100000000');
  return id;
});

process.on('message', (message: { type: string }) => {
  if (message.type === 'calls') {
    const requests = emulator.requests();
    process.send?.({
      type: 'calls',
      balance: requests.filter((request) => request.path.includes('/balances/')).length,
      ingest: requests.filter((request) => request.path === '/events/ingest').length,
      events: emulator.ingestedEvents().length,
    });
  }
  if (message.type === 'close')
    void Promise.all([emulator.close(), upstream.close()]).then(() => process.exit(0));
});
process.send?.({
  type: 'ready',
  baseURL: emulator.baseURL,
  upstreamURL: upstream.baseURL,
  apiKey: emulator.apiKey,
  entitlementId,
  customerIds,
});
