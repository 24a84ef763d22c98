/**
 * The allow-list of tables jobs may load entities from, with the type of each
 * key column. Every load goes through it, including loads of contexts read back
 * from storage, so stored data can never make the library query another table,
 * another column, or a key column with a key of another type.
 *
 * Why the type matters: MySQL/MariaDB compare a number with a string column,
 * and a string with an integer column, as numbers. `WHERE token = 0` matches
 * every token that does not start with a digit; `WHERE id = '1 OR 1=1'` matches
 * id 1. A key whose JavaScript type is not the column's is refused.
 */
import type { Knex } from 'knex';
import type { EntityKey, EntityKeyType, SchedulerOptions } from '../interfaces.js';
import { EntityNotAllowedError, EntityNotFoundError } from '../errors.js';
import { EntityRef, rememberLoaded } from './ref.js';

/**
 * A key column's type: declared in the allow-list, or `undeclared` for a column
 * listed in the older forms (`'id'`, `['order_id', 'line']`). An undeclared
 * column may hold integers or strings, so it takes only keys that select the
 * same row either way: an integer, as a safe integer or its canonical decimal
 * digits, queried as those digits (a string column compares them as a string,
 * an integer column as the number they spell). Existing allow-lists thereby
 * fail closed: integer keys go on working, a string-keyed table's tokens are
 * refused until its column is declared `'string'`.
 */
type ColumnType = EntityKeyType | 'undeclared';

type Declaration = NonNullable<SchedulerOptions['entities']>[string];

/** An integer as its canonical decimal digits: no sign on 0, no leading zero, no space, no exponent. */
const DECIMAL_INTEGER = /^(0|-?[1-9][0-9]*)$/;

export class Entities {
  private readonly tables: Map<string, ReadonlyMap<string, ColumnType>>;

  constructor(allowed: NonNullable<SchedulerOptions['entities']> = {}) {
    this.tables = new Map(Object.entries(allowed).map(([table, declared]) => [table, keyColumnsOf(table, declared)]));
  }

  /** The WHERE clause of `entity`, after checking its table, key columns and key types against the allow-list. */
  where(entity: EntityRef): Record<string, string | number> {
    const columns = this.tables.get(entity.table);
    if (!columns) {
      const listed = [...this.tables.keys()];
      throw new EntityNotAllowedError(
        `jobs may not load entities from table '${entity.table}': ` +
          (listed.length
            ? `the scheduler's entities option allows ${listed.map((t) => `'${t}'`).join(', ')}`
            : `the scheduler has no entities option; declare the tables and their keys, e.g. { entities: { ${entity.table}: { id: 'integer' } } }`),
      );
    }
    const values = keyValues(entity.table, entity.key, [...columns.keys()]);
    return Object.fromEntries(Object.entries(values).map(([column, value]) => [column, bindable(entity, column, columns.get(column)!, value)]));
  }

  /** Loads `entity` through `db`; the row is remembered as loaded (it may go into another context as is). */
  async load(db: Knex | Knex.Transaction, entity: EntityRef, where: string): Promise<Record<string, unknown>> {
    const row = await db(entity.table).where(this.where(entity)).first();
    if (!row) throw new EntityNotFoundError(entity.table, entity.key, where);
    return rememberLoaded(row, entity);
  }
}

function keyColumnsOf(table: string, declared: Declaration): ReadonlyMap<string, ColumnType> {
  let columns: [string, ColumnType][];
  if (typeof declared === 'string') columns = [[declared, 'undeclared']];
  else if (Array.isArray(declared)) columns = (declared as readonly string[]).map((column) => [column, 'undeclared']);
  else if (typeof declared === 'object' && declared !== null) {
    columns = Object.entries(declared as Readonly<Record<string, EntityKeyType>>).map(([column, type]) => {
      if (type !== 'integer' && type !== 'string') {
        throw new TypeError(`entities.${table}.${column}: the key type must be 'integer' or 'string', got ${JSON.stringify(type)}`);
      }
      return [column, type];
    });
  } else {
    throw new TypeError(`entities.${table}: give the key column(s) and their types, e.g. { id: 'integer' } or { order_id: 'integer', line: 'integer' }`);
  }
  if (columns.length === 0) throw new TypeError(`entities.${table}: name the primary key column(s)`);
  return new Map(columns);
}

/** Column → value of `key`, after checking it names exactly the table's key columns. */
function keyValues(table: string, key: EntityKey, columns: readonly string[]): Record<string, unknown> {
  if (typeof key !== 'object') {
    if (columns.length !== 1) {
      throw new EntityNotAllowedError(`table '${table}' has a composite key (${columns.join(', ')}): give it as an object`);
    }
    return { [columns[0]!]: key };
  }
  const given = Object.keys(key).sort();
  const expected = [...columns].sort();
  if (given.length !== expected.length || given.some((c, i) => c !== expected[i])) {
    throw new EntityNotAllowedError(`table '${table}' is keyed by (${columns.join(', ')}), not by (${given.join(', ')})`);
  }
  return { ...key };
}

/** The value to query `column` with, or an error saying why `value` does not fit the column's type. */
function bindable(entity: EntityRef, column: string, type: ColumnType, value: unknown): string | number {
  const problem = typeProblem(entity.table, column, type, value);
  if (problem !== undefined) {
    const key = JSON.stringify(entity.key) ?? String(entity.key);
    throw new EntityNotAllowedError(`ref('${entity.table}', ${key}): key column '${column}' of table '${entity.table}' ${problem}`);
  }
  return type === 'undeclared' ? String(value) : (value as string | number);
}

function typeProblem(table: string, column: string, type: ColumnType, value: unknown): string | undefined {
  const given =
    typeof value === 'string' ? `the string ${JSON.stringify(value)}` : typeof value === 'number' ? `the number ${value}` : `a ${typeof value}`;
  switch (type) {
    case 'string':
      if (typeof value === 'string') return undefined;
      return `is declared 'string', but the key is ${given}: give the key as a string, e.g. String(key)`;
    case 'integer':
      if (typeof value === 'number' && Number.isSafeInteger(value)) return undefined;
      if (typeof value === 'number') return `is declared 'integer', but the key is ${given}: give a whole number between -(2^53 - 1) and 2^53 - 1`;
      return (
        `is declared 'integer', but the key is ${given}: ` +
        'give it as a number, after checking that the input is one (e.g. Number(input) when /^\\d+$/.test(input))'
      );
    case 'undeclared':
      if (isCanonicalInteger(value)) return undefined;
      return (
        `has no declared type, so its keys must be integers (a safe integer, or its decimal digits as a string such as '42'), got ${given}: ` +
        `declare the column's type in the entities option, e.g. { ${table}: { ${column}: 'string' } } or { ${table}: { ${column}: 'integer' } }`
      );
  }
}

function isCanonicalInteger(value: unknown): boolean {
  if (typeof value === 'number') return Number.isSafeInteger(value);
  return typeof value === 'string' && DECIMAL_INTEGER.test(value) && Number.isSafeInteger(Number(value));
}
