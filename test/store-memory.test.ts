import * as vitest from 'vitest';
import { describe, expect, it } from 'vitest';
import { MemoryStore } from '../src/store/memory.js';
import { describeStoreConformance } from '../src/testing/index.js';

describeStoreConformance('memory', { createStore: (now) => new MemoryStore({ now }) }, vitest);

describe('MemoryStore bounds', () => {
  it('forgets the least recently used customer beyond maxCustomers', async () => {
    const store = new MemoryStore({ maxCustomers: 2 });
    await store.syncBalance('a', 1n, 1);
    await store.syncBalance('b', 2n, 1);
    await store.getBalance('a');
    await store.syncBalance('c', 3n, 1);
    expect(await store.getBalance('b')).toBeUndefined();
    expect((await store.getBalance('a'))?.balance).toBe(1n);
  });

  it('names the option that is wrong', () => {
    expect(() => new MemoryStore({ maxCustomers: 0 })).toThrow(/`maxCustomers` must be a positive integer/);
  });
});
