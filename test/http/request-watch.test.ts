/**
 * The watch over a guard's requests in flight: requests leave it in any order,
 * and its tick then stops exactly those still in it, past their deadline.
 */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import { RequestWatch, type WatchedRequest } from '../../lib/http/request-watch.js';
import { RequestTimeoutError } from '../../lib/http/errors.js';
import { until } from '../support/helpers.js';

it('stops, at their deadline, exactly the requests that did not leave, whatever order the others left in', async () => {
  const pairs: [IncomingMessage, ServerResponse][] = [];
  const server = createServer((req, res) => pairs.push([req, res]));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  const clients = Array.from({ length: 6 }, () => httpRequest({ port, host: '127.0.0.1', path: '/' }).on('error', () => undefined));
  for (const client of clients) client.end();
  try {
    await until(() => pairs.length === 6, 5000, 'six requests in flight');
    const watch = new RequestWatch(20, false);
    const watched = pairs.map(([req, res]) => watch.watch(req, res)!);
    const leaving = [watched[1]!, watched[5]!, watched[0]!];
    for (const request of leaving) watch.forget(request);
    watch.forget(watched[1]); // twice: nothing more
    const staying = watched.filter((request) => !leaving.includes(request));
    await until(() => staying.every((request: WatchedRequest) => request.stopper.reason !== undefined), 5000, 'the tick past the deadline');
    for (const request of staying) assert.ok(request.stopper.reason instanceof RequestTimeoutError);
    for (const request of leaving) assert.equal(request.stopper.reason, undefined, 'a request that left is never stopped');
    for (const request of staying) watch.forget(request);
  } finally {
    for (const [, res] of pairs) res.end();
    server.close();
  }
});
