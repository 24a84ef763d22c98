/**
 * PersistentContext: entities handed from a request to a job by table and
 * primary key, re-loaded in the job's own transaction.
 */
import type { TransactionManager } from '../transactions/manager.js';
import { NoTransactionError, UnstorableValueError } from '../errors.js';
import type { Entities } from './entities.js';
import { type EntityRef, refOf } from './ref.js';

function toRef(value: unknown, where: string, entities: Entities): EntityRef {
  const entity = refOf(value);
  if (!entity) {
    throw new UnstorableValueError(
      `${where} is ${value === null ? 'null' : typeof value === 'object' ? 'a plain object' : `a ${typeof value}`}, ` +
        'and a context cannot tell its table and key: give ref(table, key) instead, or a row loaded with scheduler.load()',
    );
  }
  entities.where(entity); // refuse a table, or a key of a type, that is not allowed now, not only in the job
  return entity;
}

export class PersistentContext {
  /** The positional entities' refs. */
  readonly positional: readonly EntityRef[];
  /** The named entities' refs. */
  readonly named: Readonly<Record<string, EntityRef>>;

  /** @internal Use `scheduler.context(...)`. */
  /** Made by `scheduler.context()` and `ctx.persistentContext()`. @internal */
  constructor(
    positional: readonly unknown[],
    named: Readonly<Record<string, unknown>>,
    private readonly entities: Entities,
    private readonly manager: TransactionManager,
  ) {
    if (!Array.isArray(positional)) throw new TypeError('context(positional, named): positional must be an array');
    this.positional = Object.freeze(positional.map((value, i) => toRef(value, `context entity ${i}`, entities)));
    this.named = Object.freeze(
      Object.fromEntries(Object.entries(named ?? {}).map(([name, value]) => [name, toRef(value, `context entity '${name}'`, entities)])),
    );
  }

  /** Number of positional entities. */
  get length(): number {
    return this.positional.length;
  }

  /** Names of the named entities. */
  names(): string[] {
    return Object.keys(this.named);
  }

  /** The ref of entity `key` (a position or a name), without loading it. */
  ref(key: number | string): EntityRef {
    const entity = typeof key === 'number' ? this.positional[key] : Object.hasOwn(this.named, key) ? this.named[key] : undefined;
    if (!entity) {
      throw new RangeError(
        typeof key === 'number'
          ? `context has no entity ${key}: it holds ${this.length} positional entities`
          : `context has no entity '${key}': its names are ${this.names().map((n) => `'${n}'`).join(', ') || 'none'}`,
      );
    }
    return entity;
  }

  /**
   * Loads entity `key` (a position or a name) in the current transaction (the
   * job's), so it reflects what is committed, including changes the scheduling
   * request made after `schedule()`.
   */
  async get<T = Record<string, unknown>>(key: number | string): Promise<T> {
    const entity = this.ref(key);
    const tx = this.manager.current;
    if (!tx) throw new NoTransactionError(`context.get(${JSON.stringify(key)})`);
    const where = typeof key === 'number' ? `context entity ${key}` : `context entity '${key}'`;
    return (await this.entities.load(tx.db, entity, where)) as T;
  }
}
