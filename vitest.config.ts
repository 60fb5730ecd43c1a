import { defaultServerConditions } from 'vite';
import { defineConfig } from 'vitest/config';

// Workspace packages are tested from source: the `kos-source` export condition points at src/index.ts.
const conditions = ['kos-source', ...defaultServerConditions];
// Vitest hands the SSR conditions to Node as --conditions; `module` is a bundler-only condition
// that makes Node pick packages' untranspiled ESM builds (@opentelemetry/api's fails to load).
const nodeConditions = conditions.filter((condition) => condition !== 'module');

export default defineConfig({
  resolve: { conditions },
  ssr: { resolve: { conditions: nodeConditions, externalConditions: ['kos-source'] } },
  test: {
    include: ['packages/*/test/**/*.test.ts', 'tests/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
  },
});
