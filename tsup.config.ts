import { defineConfig } from 'tsup';

export default defineConfig({
  entry: { index: 'lib/index.ts', koa: 'lib/koa/index.ts', express: 'lib/express/index.ts', cli: 'lib/cli.ts' },
  format: ['esm', 'cjs'],
  dts: true,
  // One shared chunk in both formats, so `aftercommit`, `aftercommit/koa` and `aftercommit/express`
  // see the same classes (instanceof TransientError works across entries).
  splitting: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
  // The CJS build gets `import.meta.url` too (lib/support/tracing.ts finds the optional OpenTelemetry API from it).
  shims: true,
  outDir: 'dist',
});
