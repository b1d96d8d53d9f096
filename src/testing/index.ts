export * from './dodo-emulator/index.js';
export * from './mock-llm/index.js';
