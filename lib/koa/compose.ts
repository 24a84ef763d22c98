import type { Middleware, Next, ParameterizedContext } from 'koa';

/**
 * Composes middleware like koa-compose, so the guarded chain can be started
 * afresh for each attempt (one composed call may run `next()` only once).
 */
// `any` as in Koa's own Middleware type: guarded handlers may declare any state and context.
export function compose(middleware: readonly Middleware<any, any>[]) {
  for (const fn of middleware) {
    if (typeof fn !== 'function') throw new TypeError('aftercommit(options, ...middleware): every middleware must be a function');
  }
  return function run(ctx: ParameterizedContext, next?: Next): Promise<unknown> {
    let index = -1;
    const dispatch = (i: number): Promise<unknown> => {
      if (i <= index) return Promise.reject(new Error('next() called multiple times'));
      index = i;
      const fn = i === middleware.length ? next : middleware[i];
      if (!fn) return Promise.resolve();
      try {
        return Promise.resolve(fn(ctx, () => dispatch(i + 1)));
      } catch (err) {
        return Promise.reject(err);
      }
    };
    return dispatch(0);
  };
}
