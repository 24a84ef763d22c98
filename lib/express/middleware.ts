/**
 * aftercommit(options, ...handlers) for Express: one transaction per request
 * around the given handlers (functions, routers), committed before the response
 * is sent, and all of them run again on a transient error.
 *
 * The handlers are run by aftercommit itself, in order, as Express runs a
 * stack: `next()` goes on to the next one, `next(err)` to the next error
 * handler (four parameters) among them, a rejected promise (Express 5 style,
 * also under Express 4) is `next(err)`. The response they write is held (see
 * held-response.ts) and sent after the commit. Falling off the end of the
 * handlers commits and goes on with aftercommit's own `next()`, outside the
 * transaction; an error no guarded error handler took rolls back and goes on
 * with `next(err)`, to the app's error handlers, the held response dropped.
 *
 * Express 4's own routers do not catch rejected promises of their routes: an
 * async route under an Express 4 router that rejects leaves the request waiting
 * until aftercommit's `timeout`. Catch and `next(err)` there, or use Express 5.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import type { Transaction } from '../interfaces.js';
import type { AftercommitHandler, AftercommitOptions, AftercommitRequestHandler } from './interfaces.js';
import { ClientGoneError, RetryNotSafeError } from '../http/errors.js';
import { defineGetters, GIVEN_SCHEDULER, guardSettings, requestFailure, type GuardedRequest } from '../http/guard.js';
import { metadataOf, ownerFromOption, ownerFromUser, requestIdFrom, withRequestId } from '../http/request-metadata.js';
import { clientGone } from '../http/request-watch.js';
import { HeldResponse, restoreResponse, snapshotResponse } from './held-response.js';
import { RUN_STOPPER } from '../transactions/run-stopper.js';
import type { InternalRunOptions } from '../transactions/manager.js';

type AnyHandler = (...args: any[]) => unknown;

/** How an attempt's handlers ended: they answered (wrote the response), or passed on (`next()`/`next(err)`) past the last one. */
type Outcome = { answered: true; late?: { err: unknown } } | { answered: false; err: unknown };

type ExpressRequest = Request & { _body?: boolean };

/** The request as it was before the first attempt: what a retry starts from again. */
interface RequestStart {
  readonly bodyReadBefore: boolean;
  readonly body: unknown;
  readonly url: string;
  readonly baseUrl: string;
  readonly params: unknown;
}

function requestStart(req: Request): RequestStart {
  return { bodyReadBefore: req.readableEnded, body: req.body, url: req.url, baseUrl: req.baseUrl, params: req.params };
}

function restoreRequest(req: Request, start: RequestStart): void {
  req.url = start.url;
  req.baseUrl = start.baseUrl;
  req.params = start.params as Request['params'];
  if (start.bodyReadBefore) req.body = start.body;
}

/** Why the request cannot be run again, or undefined when it can. */
function unsafeToRetry(req: Request, res: ServerResponse, start: RequestStart, held: HeldResponse | undefined): string | undefined {
  if (held?.streamed && !held.ended) return 'the handler streams its response (res.write or flushHeaders before res.end), and a stream is not run twice';
  if (res.headersSent) return 'the response headers were already sent';
  if (clientGone(req as IncomingMessage, res)) return 'the client has gone away';
  // Read inside the handlers: safe only if a parser kept it (it sets req._body and skips the body on the retry).
  const kept = req.body !== start.body || (req as ExpressRequest)._body === true;
  if (!start.bodyReadBefore && req.readableEnded && !kept) {
    return 'the request body was read inside the guarded handlers without being kept (put body parsers before aftercommit)';
  }
  return undefined;
}

/** Runs the handlers as an Express stack, for one attempt; resolves when they answer or pass on. */
function runHandlers(
  handlers: readonly AnyHandler[],
  req: Request,
  res: Response,
  hold: (onAnswer: () => void) => void,
  current: () => boolean,
): Promise<Outcome> {
  return new Promise((resolve) => {
    let outcome: Outcome | undefined;
    hold(() => {
      outcome ??= { answered: true };
      resolve(outcome);
    });
    let index = 0;
    const next = (err?: unknown): void => {
      if (!current()) return; // an attempt already given up (retried, timed out): its handlers go no further
      if (outcome) {
        // After the answer: an error before the commit still rolls back (checked once the handlers yield).
        if (outcome.answered && err !== undefined && err !== 'route' && err !== 'router') outcome.late ??= { err };
        return;
      }
      if (err === 'route') err = undefined;
      const handler = err === 'router' ? undefined : handlers[index++];
      if (!handler) {
        outcome = { answered: false, err: err === 'router' ? undefined : err };
        resolve(outcome);
        return;
      }
      const isErrorHandler = handler.length === 4;
      if ((err !== undefined) !== isErrorHandler) return next(err);
      try {
        const result = isErrorHandler ? handler(err, req, res, next) : handler(req, res, next);
        if (result && typeof (result as Promise<unknown>).then === 'function') {
          (result as Promise<unknown>).then(undefined, (rejected: unknown) => next(rejected ?? new Error('Rejected promise')));
        }
      } catch (thrown) {
        next(thrown);
      }
    };
    next();
  });
}

/**
 * Guards `handlers` with one transaction per request. Inline handlers see
 * `req` as an AftercommitRequest (`req.db`, `req.transaction`, `req.scheduler`
 * and `req.persistentContext` present).
 */
export function aftercommit(options: AftercommitOptions, ...handlers: AftercommitRequestHandler[]): RequestHandler;
/** The same, with error handlers (four parameters) among the handlers; give those their parameter types (a union of handler kinds types no inline parameters). */
export function aftercommit(options: AftercommitOptions, ...handlers: AftercommitHandler[]): RequestHandler;
export function aftercommit(options: AftercommitOptions, ...handlers: AftercommitHandler[]): RequestHandler {
  const settings = guardSettings(options, 'req', 'handlers');
  const { manager, scheduler, requests, watchClient, requestIdHeader: header } = settings;
  for (const handler of handlers) {
    if (typeof handler !== 'function') throw new TypeError('aftercommit(options, ...handlers): every handler must be a function or a router');
  }
  const rollbackOn = options.rollbackOn ?? ((_req: Request, res: Response) => res.statusCode >= 500);
  const headerKey = header.toLowerCase();
  const stack = handlers as AnyHandler[];

  return function aftercommitMiddleware(req: Request, res: Response, next: NextFunction): void {
    const requestId = requestIdFrom(req.headers[headerKey]);
    res.setHeader(header, requestId);
    const line = `${req.method} ${(req.originalUrl ?? req.url).split('?')[0]}`;
    const meta = settings.metadata
      ? withRequestId(settings.metadata(req), requestId)
      : metadataOf(settings.user ? ownerFromOption(settings.user(req)) : ownerFromUser((req as { user?: unknown }).user, 'req.user'), line, requestId);
    const start = requestStart(req);
    const snapshot = snapshotResponse(res);
    defineGetters(req, 'req');
    (req as GuardedRequest)[GIVEN_SCHEDULER] = scheduler ?? null;
    req.persistentContext = settings.persistentContext;
    let held: HeldResponse | undefined;
    let lastError: unknown;
    let attempts = 0;
    let finished = false;
    const runOptions: InternalRunOptions = {
      name: line,
      metadata: meta,
      retries: options.retries,
      [RUN_STOPPER]: requests.watch(req, req, res),
      onRetry: (event) => {
        lastError = event.error;
        options.onRetry?.(event, req);
      },
    };

    const attempt = async (tx: Transaction): Promise<Outcome> => {
      attempts = tx.attempt;
      if (tx.attempt > 1) {
        const unsafe = unsafeToRetry(req, res, start, held);
        held?.uninstall();
        if (unsafe) throw new RetryNotSafeError(unsafe, lastError);
        restoreRequest(req, start);
        restoreResponse(res, snapshot);
      }
      req.transaction = tx;
      const attemptNumber = tx.attempt;
      const outcome = await runHandlers(
        stack,
        req,
        res,
        (onAnswer) => {
          held = new HeldResponse(res, onAnswer);
        },
        () => !finished && attempts === attemptNumber,
      );
      if (!outcome.answered) {
        if (outcome.err !== undefined) throw outcome.err; // rolls back; a transient one runs the handlers again
      } else {
        // An error right after the answer (a route that throws after res.json, which its router passes on a few
        // promise turns later) still rolls back: wait for the handlers to yield once.
        await new Promise(setImmediate);
        if (outcome.late) throw outcome.late.err;
        if (rollbackOn(req, res)) tx.setRollbackOnly();
      }
      if (watchClient && clientGone(req, res)) throw new ClientGoneError(); // nobody will see the answer: no commit
      return outcome;
    };

    manager.run(attempt, runOptions).then(
      () => {
        finished = true;
        requests.forget(req);
        held?.release();
        if (!held?.answered) next();
      },
      (err: unknown) => {
        finished = true;
        requests.forget(req);
        held?.uninstall();
        restoreResponse(res, snapshot);
        next(requestFailure(settings, err, line, requestId, attempts));
      },
    );
  };
}
