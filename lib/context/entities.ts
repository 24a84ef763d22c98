/**
 * The allow-list of tables jobs may load entities from. Every load goes through
 * it, including loads of contexts read back from storage, so stored data can
 * never make the library query another table or another column.
 */
import type { Knex } from 'knex';
import type { EntityKey } from '../interfaces.js';
import { EntityNotAllowedError, EntityNotFoundError } from '../errors.js';
import { EntityRef, rememberLoaded } from './ref.js';

export class Entities {
  private readonly keys: Map<string, readonly string[]>;

  constructor(allowed: Readonly<Record<string, string | readonly string[]>> = {}) {
    this.keys = new Map(
      Object.entries(allowed).map(([table, columns]) => {
        const list = typeof columns === 'string' ? [columns] : [...columns];
        if (list.length === 0) throw new TypeError(`entities.${table}: name the primary key column(s)`);
        return [table, Object.freeze(list)];
      }),
    );
  }

  /** The WHERE clause of `entity`, after checking table and key against the allow-list. */
  where(entity: EntityRef): Record<string, string | number> {
    const columns = this.keys.get(entity.table);
    if (!columns) {
      const listed = [...this.keys.keys()];
      throw new EntityNotAllowedError(
        `jobs may not load entities from table '${entity.table}': ` +
          (listed.length
            ? `the scheduler's entities option allows ${listed.map((t) => `'${t}'`).join(', ')}`
            : `the scheduler has no entities option; declare the tables and their keys, e.g. { entities: { ${entity.table}: 'id' } }`),
      );
    }
    return keyColumns(entity.table, entity.key, columns);
  }

  /** Loads `entity` through `db`; the row is remembered as loaded (it may go into another context as is). */
  async load(db: Knex | Knex.Transaction, entity: EntityRef, where: string): Promise<Record<string, unknown>> {
    const row = await db(entity.table).where(this.where(entity)).first();
    if (!row) throw new EntityNotFoundError(entity.table, entity.key, where);
    return rememberLoaded(row, entity);
  }
}

function keyColumns(table: string, key: EntityKey, columns: readonly string[]): Record<string, string | number> {
  if (typeof key !== 'object') {
    if (columns.length !== 1) {
      throw new EntityNotAllowedError(`table '${table}' has a composite key (${columns.join(', ')}): give it as an object`);
    }
    return { [columns[0]!]: key };
  }
  const given = Object.keys(key).sort();
  if (given.length !== columns.length || given.some((c, i) => c !== [...columns].sort()[i])) {
    throw new EntityNotAllowedError(`table '${table}' is keyed by (${columns.join(', ')}), not by (${given.join(', ')})`);
  }
  return { ...key };
}
