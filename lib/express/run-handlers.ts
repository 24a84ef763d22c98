/**
 * Runs the guarded handlers as Express runs a stack, for one attempt: `next()`
 * goes on to the next handler, `next(err)` to the next error handler (four
 * parameters), `next('route')` on, `next('router')` past the last one; a falsy
 * error is none, as in Express; a throw or a rejected promise (Express 5 style,
 * also under Express 4) is `next(err)`.
 */
import type { Request, Response } from 'express';
import type { HeldResponse } from './held-response.js';

export type AnyHandler = (...args: any[]) => unknown;

/** How an attempt's handlers ended: they answered (wrote the response), or passed on past the last one (`err` undefined for none). */
export type Outcome = { readonly answered: true } | { readonly answered: false; readonly err: unknown };

/** What the runner asks of the attempt it runs. */
export interface AttemptHooks {
  /** Whether the attempt is still the request's current one: a given-up attempt's handlers go no further. */
  isCurrent(): boolean;
  /** An error passed on after the attempt's outcome was taken (after the answer, or after the request ended). */
  late(err: unknown): void;
  /** A handler called its `next` a second time (ignored). */
  calledTwice(): void;
}

export function runHandlers(handlers: readonly AnyHandler[], req: Request, res: Response, held: HeldResponse, hooks: AttemptHooks): Promise<Outcome> {
  return new Promise((resolve) => {
    let taken = false;
    const take = (outcome: Outcome) => {
      taken = true;
      resolve(outcome);
    };
    held.hold(() => {
      if (!taken) take({ answered: true });
    });
    let index = 0;
    const next = (err?: unknown): void => {
      if (!hooks.isCurrent()) return;
      if (err === 'route' || !err) err = undefined;
      if (taken) {
        if (err !== undefined && err !== 'router') hooks.late(err);
        return;
      }
      const handler = err === 'router' ? undefined : handlers[index++];
      if (!handler) return take({ answered: false, err: err === 'router' ? undefined : err });
      const isErrorHandler = handler.length === 4;
      if ((err !== undefined) !== isErrorHandler) return next(err);
      let called = false;
      const nextOnce = (passed?: unknown) => {
        if (called) return hooks.calledTwice();
        called = true;
        next(passed);
      };
      try {
        const result = isErrorHandler ? handler(err, req, res, nextOnce) : handler(req, res, nextOnce);
        if (result && typeof (result as Promise<unknown>).then === 'function') {
          (result as Promise<unknown>).then(undefined, (rejected: unknown) => next(rejected || new Error('Rejected promise')));
        }
      } catch (thrown) {
        next(thrown || new Error('Thrown falsy value'));
      }
    };
    next();
  });
}
