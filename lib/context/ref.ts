/**
 * References to rows: table and primary key, never the row itself, so a job
 * re-loads the row in its own transaction and sees what is committed then.
 */
import type { EntityKey, EntityReference } from '../interfaces.js';

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** A row named by its table and primary key. */
export class EntityRef implements EntityReference {
  constructor(
    readonly table: string,
    readonly key: EntityKey,
  ) {
    Object.freeze(this);
  }

  toString(): string {
    return `${this.table} ${JSON.stringify(this.key)}`;
  }
}

function checkKeyValue(value: unknown, where: string): void {
  const ok = (typeof value === 'string' && value.length > 0) || (typeof value === 'number' && Number.isFinite(value));
  if (!ok) throw new TypeError(`${where} must be a non-empty string or a finite number, got ${JSON.stringify(value) ?? String(value)}`);
}

/**
 * Names a row for a persistent context: `ref('orders', 42)`, or
 * `ref('order_lines', { order_id: 42, line: 3 })` for a composite key.
 */
export function ref(table: string, key: EntityKey): EntityRef {
  if (typeof table !== 'string' || !IDENTIFIER.test(table)) {
    throw new TypeError(`ref(table, key): table must be a plain table name (letters, digits, _), got ${JSON.stringify(table)}`);
  }
  if (typeof key === 'object' && key !== null) {
    const columns = Object.keys(key);
    if (columns.length === 0) throw new TypeError(`ref('${table}', key): a composite key needs at least one column`);
    for (const column of columns) {
      if (!IDENTIFIER.test(column)) throw new TypeError(`ref('${table}', key): ${JSON.stringify(column)} is not a column name`);
      checkKeyValue(key[column], `ref('${table}', key).${column}`);
    }
    return new EntityRef(table, Object.freeze({ ...key }));
  }
  checkKeyValue(key, `ref('${table}', key)`);
  return new EntityRef(table, key);
}

/** Rows the library loaded, and the refs they were loaded by. */
const loadedRows = new WeakMap<object, EntityRef>();

/** Remembers that `row` was loaded by `entity`, so it can go into a context without a ref. */
export function rememberLoaded<T extends object>(row: T, entity: EntityRef): T {
  loadedRows.set(row, entity);
  return row;
}

/** The ref of a value given as an entity: a ref itself, or a row the library loaded. */
export function refOf(value: unknown): EntityRef | undefined {
  if (value instanceof EntityRef) return value;
  return typeof value === 'object' && value !== null ? loadedRows.get(value) : undefined;
}
