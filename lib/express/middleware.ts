/**
 * aftercommit(options, ...handlers) for Express: one transaction per request
 * around the given handlers (functions, routers), committed before the response
 * is sent, and all of them run again on a transient error.
 *
 * The handlers are run by aftercommit itself (run-handlers.ts), as Express runs
 * a stack. The response they write is held (held-response.ts) and sent after the
 * commit. Falling off the end of the handlers commits and goes on with
 * aftercommit's own `next()`, outside the transaction; an error no guarded error
 * handler took rolls back and goes on with `next(err)`, to the app's error
 * handlers, the held response dropped. An error passed on after the commit (a
 * stream that failed) goes on to the app's error handlers too.
 *
 * Express 4's own routers do not catch rejected promises of their routes: an
 * async route under an Express 4 router that rejects leaves the request waiting
 * until aftercommit's `timeout`. Catch and `next(err)` there, or use Express 5.
 */
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { IncomingMessage } from 'node:http';
import type { Transaction } from '../interfaces.js';
import type { AftercommitHandler, AftercommitOptions, AftercommitRequestHandler } from './interfaces.js';
import { ClientGoneError, RetryNotSafeError } from '../http/errors.js';
import { besideTheRequest, defineGetters, guard, guardSettings, requestEnded, requestFailure } from '../http/guard.js';
import { noteRetry } from '../http/request-metrics.js';
import { metadataOf, ownerFromOption, ownerFromUser, requestIdFrom, withRequestId } from '../http/request-metadata.js';
import { clientGone } from '../http/request-watch.js';
import { HeldResponse, headersLeft, restoreResponse, snapshotResponse } from './held-response.js';
import { requestStart, restoreRequest, unsafeToRetry } from './retry-safety.js';
import { expressPrototype } from './express-prototype.js';
import { runHandlers, type AnyHandler, type Outcome } from './run-handlers.js';
import { RUN_STOPPER } from '../transactions/run-stopper.js';
import type { InternalRunOptions } from '../transactions/manager.js';

/** Where each request's guard is kept: the getters on Express's shared request prototype read it from here. */
const GUARDS = besideTheRequest();

/**
 * The path of the route that matched, as its router declares it
 * (`req.route.path`). Not prefixed with `req.baseUrl`: that is the URL the
 * router's mount matched (`/users/alice/posts`), not its pattern, and Express
 * keeps no pattern of a mount.
 */
const matchedRoute = (req: Request): unknown => (req.route as { path?: unknown } | undefined)?.path;

/**
 * Guards `handlers` with one transaction per request. Inline handlers see
 * `req` as an AftercommitRequest (`req.db`, `req.transaction`, `req.scheduler`
 * and `req.persistentContext` present).
 */
export function aftercommit(options: AftercommitOptions, ...handlers: AftercommitRequestHandler[]): RequestHandler;
/** The same, with error handlers (four parameters) among the handlers; give those their parameter types (a union of handler kinds types no inline parameters). */
export function aftercommit(options: AftercommitOptions, ...handlers: AftercommitHandler[]): RequestHandler;
export function aftercommit(options: AftercommitOptions, ...handlers: AftercommitHandler[]): RequestHandler {
  const settings = guardSettings(options, 'req', 'handlers', matchedRoute);
  const { manager, requests, watchClient, requestIdHeader: header } = settings;
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
    defineGetters(expressPrototype(req, IncomingMessage.prototype) ?? req, 'req', GUARDS);
    const guarded = guard(GUARDS, req, settings);
    /** The attempt whose handlers may go on: the running one, the committed one (its stream), none once the request failed. */
    let current: Transaction | undefined;
    const attemptsMade: Transaction[] = [];
    const held = new HeldResponse(res, () => {
      if (current !== undefined && attemptsMade.length === 1) return false; // one attempt, not given up: nothing is stale
      const attempt = manager.attemptInContext();
      return attempt !== undefined && attempt !== current && attemptsMade.includes(attempt);
    });
    let lastError: unknown;
    let lateError: { err: unknown } | undefined;
    let committed = false;
    let passedOn = false;
    const passOn = (err?: unknown) => {
      if (passedOn) return;
      passedOn = true;
      next(err);
    };
    const watched = requests.watch(req, res);
    const runOptions: InternalRunOptions = {
      name: line,
      metadata: meta,
      retries: options.retries,
      [RUN_STOPPER]: watched?.stopper,
      onRetry: (event) => {
        lastError = event.error;
        noteRetry(guarded, event);
        options.onRetry?.(event, req);
      },
    };

    const attempt = async (tx: Transaction): Promise<Outcome> => {
      const unsafe = tx.attempt > 1 ? unsafeToRetry(req, res, start, held) : undefined;
      held.drop();
      current = tx; // from here, what the attempts before write is dropped
      attemptsMade.push(tx);
      if (unsafe) throw new RetryNotSafeError(unsafe, lastError);
      if (tx.attempt > 1) {
        restoreRequest(req, start);
        restoreResponse(res, snapshot);
      }
      lateError = undefined;
      guarded.transaction = tx;
      const outcome = await runHandlers(stack, req, res, held, {
        isCurrent: () => current === tx,
        late: (err) => {
          if (!committed) lateError ??= { err };
          else {
            manager.logger.error({ err, requestId }, `${line}: an error after the commit, passed on to the app's error handlers`);
            passOn(err);
          }
        },
        calledTwice: () => manager.logger.error({ requestId }, `${line}: a guarded handler called next() twice; the second call is ignored`),
      });
      if (!outcome.answered && outcome.err !== undefined) throw outcome.err; // rolls back; a transient one runs the handlers again
      if (outcome.answered) {
        // An error right after the answer (a route that throws after res.json, which its router passes on a few
        // promise turns later) still rolls back: wait for the handlers to yield once.
        await new Promise(setImmediate);
        const late = lateError as { err: unknown } | undefined; // set by the handlers meanwhile
        if (late) throw late.err;
      }
      if (rollbackOn(req, res)) tx.setRollbackOnly();
      if (watchClient && clientGone(req, res)) throw new ClientGoneError(); // nobody will see the answer: no commit
      return outcome;
    };

    manager.run(attempt, runOptions).then(
      (outcome) => {
        committed = true;
        requests.forget(watched);
        requestEnded(settings, guarded, req, false);
        try {
          held.release();
        } catch (err) {
          // Node refused what the handler wrote (checked late): the data is committed, the answer cannot be sent.
          manager.logger.error({ err, requestId }, `${line}: committed, but the response could not be sent`);
          if (headersLeft(res)) res.destroy();
          else passOn(err);
          return;
        }
        if (!outcome.answered) passOn();
        else if (lateError) {
          // A streaming handler that failed while its COMMIT was under way: as after the commit.
          manager.logger.error({ err: lateError.err, requestId }, `${line}: an error after the commit, passed on to the app's error handlers`);
          passOn(lateError.err);
        }
      },
      (err: unknown) => {
        current = undefined;
        requests.forget(watched);
        held.drop();
        restoreResponse(res, snapshot);
        const failure = requestFailure(settings, err, line, requestId, attemptsMade.length);
        requestEnded(settings, guarded, req, true, failure);
        passOn(failure);
      },
    );
  };
}
