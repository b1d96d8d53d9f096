export {};
export * from './mock-llm/index.js';
