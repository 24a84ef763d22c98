/**
 * The frameworks the scenarios under test/http/ run on: Koa, then each Express
 * version of test/express/versions.ts. A scenario file lists one app factory per
 * framework, each building an app around the same handler logic, and runs its
 * tests once per entry.
 */
import type Koa from 'koa';
import { EXPRESS_VERSIONS, type ExpressVersion } from '../express/versions.js';

/** `[name, entry]` for Koa (`koa`), then for each Express version (`express(version)`). */
export function frameworks<T>(koa: T, express: (version: ExpressVersion) => T): [string, T][] {
  return [['koa', koa], ...EXPRESS_VERSIONS.map((version): [string, T] => [version.name, express(version)])];
}

/**
 * The Koa app's error handler (used before aftercommit), answering as test/express/support.ts's
 * `errorsAsJson` does: the error's status (else 500) and headers, and `{ error, name, code }`.
 * `seen` gets every error it is handed.
 */
export function koaErrorsAsJson(seen: unknown[] = []): Koa.Middleware {
  return async (ctx, next) => {
    try {
      await next();
    } catch (err) {
      seen.push(err);
      const { status, message, name, code, headers } = err as { status?: number; message: string; name: string; code?: string; headers?: Record<string, string> };
      ctx.status = status ?? 500;
      ctx.set(headers ?? {});
      ctx.body = { error: message, name, code: code ?? null };
    }
  };
}
