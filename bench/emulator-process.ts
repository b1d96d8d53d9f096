import { createDodoEmulator, createMockLLM } from '../src/testing/index.js';

/**
 * The Dodo emulator (and the mock LLM) in a process of their own, so their CPU is neither the
 * server's nor the load generator's. It sets up a credit entitlement, GPT-4o meters and `customers` customers with a
 * large balance, then answers the parent's questions over IPC.
 */
const customers = Number(process.argv[2] ?? 100);
const emulator = await createDodoEmulator({ meterDelayMs: 1000 });
// The upstream of the `*-upstream` variants: an OpenAI-compatible server, answering at once.
const upstream = await createMockLLM();
const entitlement = emulator.createCreditEntitlement({ name: 'USD credits' });
emulator.createMeter({
  eventName: 'llm.input_tokens',
  creditEntitlementId: entitlement.id,
  meterUnitsPerCredit: '4000',
});
emulator.createMeter({
  eventName: 'llm.output_tokens',
  creditEntitlementId: entitlement.id,
  meterUnitsPerCredit: '1000',
});
const customerIds = Array.from({ length: customers }, (_, i) => {
  const id = emulator.createCustomer({ email: `bench-${i}@example.com` }).customer_id;
  emulator.setBalance(id, entitlement.id, '100000000');
  return id;
});

process.on('message', (message: { type: string }) => {
  if (message.type === 'calls') {
    const requests = emulator.requests();
    process.send?.({
      type: 'calls',
      balance: requests.filter((request) => request.path.includes('/balances/')).length,
      ingest: requests.filter((request) => request.path === '/events/ingest').length,
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
  entitlementId: entitlement.id,
  customerIds,
});
