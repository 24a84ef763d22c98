/**
 * Errors of statements sent through the root knex that carry no database code
 * (pg's "Connection terminated unexpectedly", a socket error): knex wrote the
 * statement, with its bound values for MySQL, in front of the driver's message.
 * None of it may reach a stored (polled) error.
 */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { storedError } from '../../lib/scheduler/stored-error.js';

it('a knex message that starts with a statement is stored as DatabaseError, without the statement or its values', () => {
  const lost = Object.assign(new Error("insert into `users` (`email`) values ('victim@example.com') - read ECONNRESET"), { code: 'ECONNRESET' });
  assert.deepEqual(storedError(lost), { name: 'DatabaseError', code: 'ECONNRESET', message: 'the database reported an error (ECONNRESET)' });
  const terminated = new Error('select * from "orders" where "token" = $1 - Connection terminated unexpectedly');
  assert.deepEqual(storedError(terminated), { name: 'DatabaseError', message: 'the database reported an error' });
});

it('an application error that merely contains " - " keeps its message', () => {
  assert.deepEqual(storedError(new Error('report for 2026-10 - no orders')), { name: 'Error', message: 'report for 2026-10 - no orders' });
});
