/**
 * The Koa adaptation's errors: each an AftercommitError with its stable code and
 * the class's own name (tests, logs and clients compare names), and the status,
 * expose flag and headers Koa answers with.
 */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { AftercommitError, ConflictError } from '../../lib/index.js';
import {
  ClientGoneError,
  DatabaseUnavailableError,
  NoSchedulerError,
  RequestTimeoutError,
  RetriesExhaustedError,
  RetryNotSafeError,
} from '../../lib/koa/index.js';

const cause = new ConflictError('stale version');

const cases = [
  { err: new RetryNotSafeError('headers already sent', cause), name: 'RetryNotSafeError', code: 'AFTERCOMMIT_RETRY_NOT_SAFE', status: 500, expose: false },
  {
    err: new DatabaseUnavailableError(5, cause),
    name: 'DatabaseUnavailableError',
    code: 'AFTERCOMMIT_DATABASE_UNAVAILABLE',
    status: 503,
    expose: true,
    headers: { 'Retry-After': '5' },
  },
  {
    err: new RetriesExhaustedError(4, 2, cause),
    name: 'RetriesExhaustedError',
    code: 'AFTERCOMMIT_RETRIES_EXHAUSTED',
    status: 503,
    expose: true,
    headers: { 'Retry-After': '2' },
  },
  { err: new RequestTimeoutError(1500), name: 'RequestTimeoutError', code: 'AFTERCOMMIT_REQUEST_TIMEOUT', status: 503, expose: true },
  { err: new ClientGoneError(), name: 'ClientGoneError', code: 'AFTERCOMMIT_CLIENT_GONE', status: 499, expose: false },
  { err: new NoSchedulerError('ctx.scheduler'), name: 'NoSchedulerError', code: 'AFTERCOMMIT_NO_SCHEDULER' },
];

for (const { err, name, code, status, expose, headers } of cases) {
  it(`${name}: an AftercommitError with code ${code}${status ? `, status ${status}` : ''}`, () => {
    assert.ok(err instanceof AftercommitError && err instanceof Error);
    assert.equal(err.name, name);
    assert.equal(err.code, code);
    assert.equal(Object.prototype.hasOwnProperty.call(err, 'name'), true, 'name is the instance’s own, as before');
    assert.match(err.stack!, new RegExp(`^${name}: `));
    const answer = err as Partial<{ status: number; expose: boolean; headers: Record<string, string> }>;
    assert.equal(answer.status, status);
    assert.equal(answer.expose, expose);
    assert.deepEqual(answer.headers, headers);
  });
}

it('the errors a retry or an outage ends with keep what caused them', () => {
  assert.equal(cases[0]!.err.cause, cause);
  assert.equal(cases[1]!.err.cause, cause);
  assert.equal(cases[2]!.err.cause, cause);
  assert.match(cases[0]!.err.message, /^the request hit a transient error \(AFTERCOMMIT_CONFLICT: stale version\) but is not run again: headers already sent\./);
  assert.equal((cases[3]!.err as RequestTimeoutError).timeoutMs, 1500);
});

it('RetryNotSafeError describes a database cause without the SQL or the values knex and the driver quote', () => {
  // As knex hands on a MariaDB deadlock: its SQL with the bound values, then the driver's message.
  const deadlock = Object.assign(
    new Error("update `accounts` set `owner` = 'alice@example.com' where `id` = 7 - Deadlock found when trying to get lock; try restarting transaction"),
    { code: 'ER_LOCK_DEADLOCK', errno: 1213, sqlState: '40001', sqlMessage: 'Deadlock found when trying to get lock; try restarting transaction' },
  );
  const { message } = new RetryNotSafeError('headers already sent', deadlock);
  assert.match(message, /^the request hit a transient error \(a deadlock or a serialization failure: the transaction was rolled back \(ER_LOCK_DEADLOCK\)\) but is not run again/);
  assert.ok(!message.includes('alice@example.com') && !message.includes('accounts'), message);
});
