import type { StoredError } from '../interfaces.js';
import { describeCause } from '../errors.js';
import { DRIVER_MESSAGE, errorField } from '../support/error-field.js';

const MAX_MESSAGE = 1000;

/**
 * A job's error as it is stored and shown to pollers: name and message, never a
 * stack. A database error keeps nothing of the database's text: drivers quote
 * values in their messages (MariaDB's `Duplicate entry 'victim@example.com'`,
 * PostgreSQL's `invalid input syntax for type integer: "…"`) and knex starts
 * them with the SQL and its bound values. It is stored as `DatabaseError` with
 * the driver's code, SQLSTATE and errno, and a fixed description of that kind
 * of error. Another error made from a database error, its `cause` (a
 * `TransactionDoomedError`, or an app's error that quotes the database's
 * message), keeps its name and message, with the database error's text in it
 * replaced by that description. The full error goes to the log, where whoever
 * runs the app reads it.
 */
export function storedError(err: unknown): StoredError {
  if (!(err instanceof Error)) return { name: 'Error', message: String(err).slice(0, MAX_MESSAGE) };
  const database = databaseCodes(err);
  if (database) return { name: 'DatabaseError', ...database, message: databaseMessage(database) };
  return { name: err.name || 'Error', message: withoutDatabaseText(err).slice(0, MAX_MESSAGE) };
}

/** The message of `err`, with the text of the database error it was made from replaced by that error's description. */
function withoutDatabaseText(err: Error): string {
  const cause = err.cause;
  const codes = cause instanceof Error ? databaseCodes(cause) : undefined;
  if (!(cause instanceof Error) || !codes) return err.message;
  const texts = [describeCause(cause), cause.message, errorField(cause, 'sqlMessage'), errorField(cause, DRIVER_MESSAGE)];
  const quoted = texts.filter((text): text is string => typeof text === 'string' && text.length > 0).sort((a, b) => b.length - a.length);
  const description = databaseMessage(codes);
  return quoted.reduce((message, text) => message.split(text).join(description), err.message);
}

type DatabaseCodes = Pick<StoredError, 'code' | 'sqlState' | 'errno'>;

/** `found` without the codes the driver did not give (so a stored error has no undefined fields). */
function codes(found: DatabaseCodes): DatabaseCodes {
  return Object.fromEntries(Object.entries(found).filter(([, value]) => value !== undefined)) as DatabaseCodes;
}

/** The codes of an error raised by the database or its driver, or undefined for any other error. */
function databaseCodes(err: Error): DatabaseCodes | undefined {
  const code = errorField(err, 'code');
  const errno = errorField(err, 'errno');
  const sqlState = errorField(err, 'sqlState');
  // MySQL/MariaDB (mysql2, mysql): an error the server sent.
  if (typeof sqlState === 'string' && typeof errno === 'number') {
    return codes({ code: typeof code === 'string' ? code : `errno ${errno}`, sqlState, errno });
  }
  // PostgreSQL (pg): the SQLSTATE is its code.
  if (typeof errorField(err, 'severity') === 'string' && typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) return { code, sqlState: code };
  // SQLite (better-sqlite3, sqlite3).
  if (typeof code === 'string' && code.startsWith('SQLITE_')) return codes({ code, errno: typeof errno === 'number' ? errno : undefined });
  // A statement of the job's transaction failed in some other way (a connection lost on the way):
  // the message may still start with knex's SQL.
  if (DRIVER_MESSAGE in err) return codes({ code: typeof code === 'string' ? code : undefined });
  // mysql2's own errors for a connection that failed (PROTOCOL_CONNECTION_LOST, ECONNRESET, ...).
  if (errorField(err, 'fatal') === true && typeof code === 'string') return { code };
  // Any other error of a statement sent through the root knex (pg's "Connection terminated
  // unexpectedly", a socket error): knex put the SQL with its bound values in front of the message.
  if (KNEX_SQL_PREFIX.test(err.message)) return codes({ code: typeof code === 'string' ? code : undefined });
  return undefined;
}

/** The start of a message knex wrote: a statement, then ` - ` and the driver's message. */
const KNEX_SQL_PREFIX = /^\s*(select|insert|update|delete|with|create|alter|drop|truncate|replace|call|begin|commit|rollback|savepoint|set|lock)\b[\s\S]* - /i;

/** Descriptions of the errors jobs meet most, by the codes each database gives them. */
const KNOWN: [description: string, codes: readonly string[]][] = [
  ['duplicate key: another row already has this value of a unique key', ['ER_DUP_ENTRY', 'ER_DUP_KEY', 'ER_DUP_ENTRY_WITH_KEY_NAME', '23505', 'SQLITE_CONSTRAINT_UNIQUE', 'SQLITE_CONSTRAINT_PRIMARYKEY']],
  [
    'foreign key violation: the row refers to a row that does not exist, or a row that refers to it still exists',
    ['ER_NO_REFERENCED_ROW', 'ER_NO_REFERENCED_ROW_2', 'ER_ROW_IS_REFERENCED', 'ER_ROW_IS_REFERENCED_2', '23503', 'SQLITE_CONSTRAINT_FOREIGNKEY'],
  ],
  ['a NOT NULL column was given no value', ['ER_BAD_NULL_ERROR', 'ER_NO_DEFAULT_FOR_FIELD', '23502', 'SQLITE_CONSTRAINT_NOTNULL']],
  ['a check constraint was violated', ['ER_CONSTRAINT_FAILED', 'ER_CHECK_CONSTRAINT_VIOLATED', '23514', 'SQLITE_CONSTRAINT_CHECK']],
  ['a deadlock or a serialization failure: the transaction was rolled back', ['ER_LOCK_DEADLOCK', '40001', '40P01']],
  ['a lock wait timed out', ['ER_LOCK_WAIT_TIMEOUT', '55P03']],
  ['the statement was cancelled (a statement timeout, or an administrator)', ['ER_QUERY_INTERRUPTED', '57014']],
  ['a table or column does not exist', ['ER_NO_SUCH_TABLE', 'ER_BAD_FIELD_ERROR', '42P01', '42703']],
  ['the database rejected the SQL (a syntax error)', ['ER_PARSE_ERROR', '42601']],
  ['the database is locked by another connection', ['SQLITE_BUSY', 'SQLITE_LOCKED']],
];

/** Descriptions of SQLSTATE classes (the first two characters), for the codes not listed above. */
const SQLSTATE_CLASSES: Record<string, string> = {
  '08': 'the connection to the database failed',
  '0A': 'the database does not support this feature',
  '21': 'a statement affected or returned a number of rows it may not (a cardinality violation)',
  '22': 'a value does not fit its column (wrong type, out of range or too long)',
  '23': 'a constraint was violated',
  '25': 'the statement is not allowed in the transaction’s state',
  '28': 'the database refused the credentials',
  '40': 'the transaction was rolled back by the database',
  '42': 'the database rejected the statement (a missing table, column or privilege, or a syntax error)',
  '53': 'the database ran out of a resource (disk, memory, connections)',
  '54': 'a statement exceeded a limit of the database',
  '55': 'an object was not in the state the statement needs (e.g. a lock was not available)',
  '57': 'the database cancelled the statement or is shutting down',
  '58': 'the database had a system error',
  XX: 'the database had an internal error',
};

/** Descriptions of SQLite's primary result codes, for the extended codes not listed above. */
const SQLITE_CODES: Record<string, string> = {
  SQLITE_CONSTRAINT: 'a constraint was violated',
  SQLITE_ERROR: 'the database rejected the statement (a missing table or column, or a syntax error)',
  SQLITE_READONLY: 'the database is read-only',
  SQLITE_FULL: 'the database or its disk is full',
  SQLITE_IOERR: 'the database had an I/O error',
  SQLITE_CORRUPT: 'the database file is corrupt',
  SQLITE_CANTOPEN: 'the database file could not be opened',
  SQLITE_TOOBIG: 'a value is too large for the database',
  SQLITE_MISMATCH: 'a value does not fit its column',
};

/** A fixed description of a database error, from its codes only: no value, no SQL can reach it. */
function databaseMessage({ code, sqlState }: DatabaseCodes): string {
  const described =
    KNOWN.find(([, codes]) => code !== undefined && codes.includes(code))?.[0] ??
    (sqlState === undefined ? undefined : SQLSTATE_CLASSES[sqlState.slice(0, 2)]) ??
    (code?.startsWith('SQLITE_') ? SQLITE_CODES[code.split('_', 2).join('_')] : undefined) ??
    'the database reported an error';
  return code === undefined ? described : `${described} (${code})`;
}
