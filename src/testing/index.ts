export * from './dodo-emulator/index.js';
export * from './mock-llm/index.js';
export {
  type ConformanceAssertion,
  type ConformanceMatchers,
  type ConformanceSubject,
  type ConformanceTestApi,
  describeStoreConformance,
} from './store-conformance/index.js';
