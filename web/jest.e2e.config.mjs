import nextJest from 'next/jest.js';

const createJestConfig = nextJest({ dir: './' });

/** The browser test (npm run e2e): node environment, one file, steps in order. */
/** @type {import('jest').Config} */
const config = {
  testEnvironment: 'node',
  roots: ['<rootDir>/e2e'],
  testMatch: ['**/*.e2e.ts'],
  testTimeout: 60_000,
  maxWorkers: 1,
};

export default createJestConfig(config);
