/**
 * Whether an Express request can be run again after a transient error, and the
 * request as a retry starts it again. It cannot run again when something of the
 * failed attempt has left the process or cannot be replayed: a response that
 * started streaming, headers already sent, a client that is gone, or a request
 * body read from the socket inside the handlers without being kept (body parsers
 * belong before aftercommit).
 */
import type { IncomingMessage } from 'node:http';
import type { Request, Response } from 'express';
import { copyData } from '../http/copy-data.js';
import { clientGone } from '../http/request-watch.js';
import { headersLeft, type HeldResponse } from './held-response.js';

type ExpressRequest = Request & { _body?: boolean };

/** The request as it was before the first attempt. */
export interface RequestStart {
  /** Whether the request body had been read (even in part) before the handlers ran. */
  readonly bodyReadBefore: boolean;
  /** `req.body` itself, and a copy of it that retries start from (handlers may change it in place). */
  readonly body: unknown;
  readonly bodyCopy: unknown;
  readonly url: string;
  readonly baseUrl: string;
  readonly params: unknown;
}

export function requestStart(req: Request): RequestStart {
  const bodyReadBefore = req.readableDidRead || req.readableEnded;
  const body: unknown = req.body;
  return { bodyReadBefore, body, bodyCopy: copyData(body), url: req.url, baseUrl: req.baseUrl, params: req.params };
}

/** Puts the request back as it was before the first attempt. */
export function restoreRequest(req: Request, start: RequestStart): void {
  req.url = start.url;
  req.baseUrl = start.baseUrl;
  req.params = start.params as Request['params'];
  if (start.bodyReadBefore) req.body = copyData(start.bodyCopy);
}

/** Why the request cannot be run again, or undefined when it can. */
export function unsafeToRetry(req: Request, res: Response, start: RequestStart, held: HeldResponse): string | undefined {
  if (held.streamed && !held.ended) return 'the handler streams its response (res.write or flushHeaders before res.end), and a stream is not run twice';
  if (headersLeft(res)) return 'the response headers were already sent';
  if (clientGone(req as IncomingMessage, res)) return 'the client has gone away';
  // Read inside the handlers (even in part): safe only if a parser kept it (it sets req._body and skips the body on the retry).
  const kept = req.body !== start.body || (req as ExpressRequest)._body === true;
  if (!start.bodyReadBefore && (req.readableDidRead || req.readableEnded) && !kept) {
    return 'the request body was read inside the guarded handlers without being kept (put body parsers before aftercommit)';
  }
  return undefined;
}
