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
  // lib/support/tracing.ts finds the optional OpenTelemetry API from __filename in the CJS build and from
  // import.meta.url in the ESM build; the shim only keeps `import.meta` (a syntax error in CommonJS) out of the CJS build.
  shims: true,
  outDir: 'dist',
});
