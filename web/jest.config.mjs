import nextJest from 'next/jest.js';

const createJestConfig = nextJest({ dir: './' });

/** @type {import('jest').Config} */
const config = {
  testEnvironment: 'jsdom',
  roots: ['<rootDir>/tests'],
  setupFilesAfterEnv: ['<rootDir>/tests/setup.ts'],
  moduleNameMapper: {
    '^@/(.*)$': '<rootDir>/src/$1',
    // The test server runs `ws` under jsdom: take its Node build, not the browser stub.
    '^ws$': '<rootDir>/node_modules/ws/index.js',
  },
  testTimeout: 20_000,
};

export default createJestConfig(config);
