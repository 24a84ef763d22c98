/**
 * How job arguments and results are stored: JSON, plus tagged values for Date,
 * entity refs and contexts, and any codecs the user adds. Whatever cannot be
 * stored faithfully (functions, cycles, class instances, NaN, BigInt without a
 * codec, too many bytes) is refused with an error that says where it is.
 * Both schedulers store this form, so a job never shares objects with the
 * request that scheduled it.
 */
import type { ArgumentCodec, TransactionMeta } from '../interfaces.js';
import { UnstorableValueError } from '../errors.js';
import { EntityRef, ref } from '../context/ref.js';

/** Marks a tagged value: `{ "$ac": codec name, "v": encoded }`. */
const TAG = '$ac';
/** Escapes a user object that happens to have a `$ac` key. */
const OBJECT = 'object';
const UNDEFINED = 'undefined';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** BigInt stored as its decimal string; opt in with `codecs: [bigIntCodec]`. */
export const bigIntCodec: ArgumentCodec<bigint> = {
  name: 'bigint',
  test: (value) => typeof value === 'bigint',
  encode: (value) => value.toString(),
  decode: (stored) => BigInt(stored as string),
};

const dateCodec: ArgumentCodec<Date> = {
  name: 'date',
  test: (value) => value instanceof Date,
  encode: (value) => {
    if (Number.isNaN(value.getTime())) throw new RangeError('an Invalid Date has no time to store');
    return value.toISOString();
  },
  decode: (stored) => new Date(stored as string),
};

const refCodec: ArgumentCodec<EntityRef> = {
  name: 'ref',
  test: (value) => value instanceof EntityRef,
  encode: (value) => ({ table: value.table, key: value.key }),
  decode: (stored) => {
    const { table, key } = stored as { table: string; key: EntityRef['key'] };
    return ref(table, key); // validates the stored shape again
  },
};

function describe(value: unknown): string {
  if (typeof value === 'function') return 'a function';
  if (typeof value === 'symbol') return 'a symbol';
  if (typeof value === 'bigint') return 'a BigInt (add a codec, e.g. codecs: [bigIntCodec])';
  if (typeof value === 'number') return `the number ${value}`;
  const name = (value as object).constructor?.name;
  return name ? `an instance of ${name}` : 'an object with an unusual prototype';
}

function isPlainObject(value: object): boolean {
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

export interface ValueCodecOptions {
  codecs: readonly ArgumentCodec[];
  maxArgumentBytes: number;
  maxResultBytes: number;
}

/** Encodes and decodes job arguments and results for one scheduler. */
export class ValueCodec {
  private readonly codecs: readonly ArgumentCodec[];
  private readonly byName: Map<string, ArgumentCodec>;

  constructor(
    private readonly options: ValueCodecOptions,
    contextCodec: ArgumentCodec,
  ) {
    this.codecs = [dateCodec, refCodec, contextCodec, ...options.codecs];
    this.byName = new Map();
    for (const codec of this.codecs) {
      if (codec.name === OBJECT || codec.name === UNDEFINED || this.byName.has(codec.name)) {
        throw new TypeError(`codec name '${codec.name}' is taken; give each codec a unique name`);
      }
      this.byName.set(codec.name, codec);
    }
  }

  /** The stored form of a job's arguments, or an error naming the job and the offending argument. */
  encodeArguments(job: string, args: readonly unknown[]): string {
    const text = this.encode(args, (path, reason) => `cannot schedule '${job}': ${path} is ${reason}`, (i) => `argument ${i + 1}`);
    return this.checkSize(text, this.options.maxArgumentBytes, `the arguments of '${job}'`, 'maxArgumentBytes', 'pass ids and load the data in the job');
  }

  /** The stored form of a job's result, or an error saying what in it cannot be stored. */
  encodeResult(job: string, value: unknown): string {
    const text = this.encode([value], (path, reason) => `the result of job '${job}' cannot be stored: ${path} is ${reason}`, () => 'result');
    return this.checkSize(text, this.options.maxResultBytes, `the result of '${job}'`, 'maxResultBytes', 'store large output in a table and return its id');
  }

  /** The stored form of the scheduling transaction's metadata, which travels with the job. */
  encodeMeta(job: string, meta: TransactionMeta): string {
    return this.encode([meta], (path, reason) => `cannot schedule '${job}': ${path} is ${reason}`, () => 'tx.meta');
  }

  decodeArguments(text: string): unknown[] {
    return this.decode(JSON.parse(text)) as unknown[];
  }

  /** Decodes what encodeResult or encodeMeta stored. */
  decodeValue(text: string): unknown {
    return (this.decode(JSON.parse(text)) as unknown[])[0];
  }

  private checkSize(text: string, limit: number, what: string, option: string, advice: string): string {
    const bytes = Buffer.byteLength(text);
    if (bytes > limit) {
      throw new UnstorableValueError(`${what} take ${bytes} bytes when stored, over the limit of ${limit} (${option}): ${advice}`);
    }
    return text;
  }

  private encode(values: readonly unknown[], fail: (path: string, reason: string) => string, label: (index: number) => string): string {
    const ancestors = new Set<object>();
    const walk = (value: unknown, path: string): Json => {
      switch (typeof value) {
        case 'string':
        case 'boolean':
          return value;
        case 'number':
          if (Number.isFinite(value)) return value;
          throw new UnstorableValueError(fail(path, describe(value)));
        case 'undefined':
          return { [TAG]: UNDEFINED };
        case 'object':
          if (value === null) return null;
          break;
        default:
          if (typeof value !== 'bigint' || !this.codecs.some((c) => c.test(value))) {
            throw new UnstorableValueError(fail(path, describe(value)));
          }
      }
      const codec = this.codecs.find((c) => c.test(value));
      if (codec) {
        let encoded: unknown;
        try {
          encoded = codec.encode(value);
        } catch (err) {
          throw new UnstorableValueError(fail(path, `refused by codec '${codec.name}': ${(err as Error).message}`));
        }
        return { [TAG]: codec.name, v: walk(encoded, path) };
      }
      const object = value as object;
      if (ancestors.has(object)) throw new UnstorableValueError(fail(path, 'a reference back to one of its own containers (a cycle)'));
      if (!Array.isArray(object) && !isPlainObject(object)) throw new UnstorableValueError(fail(path, describe(object)));
      ancestors.add(object);
      try {
        // Array.from visits holes (map would skip them, and JSON would turn them into null).
        if (Array.isArray(object)) return Array.from(object, (item, i) => walk(item, `${path}[${i}]`));
        const out: Record<string, Json> = {};
        for (const [key, item] of Object.entries(object)) {
          // defineProperty: a key named __proto__ stays a key (assignment would set the prototype).
          if (item !== undefined) Object.defineProperty(out, key, { value: walk(item, `${path}.${key}`), enumerable: true, writable: true, configurable: true });
        }
        return Object.hasOwn(out, TAG) ? { [TAG]: OBJECT, v: out } : out;
      } finally {
        ancestors.delete(object);
      }
    };
    return JSON.stringify(values.map((value, i) => walk(value, label(i))));
  }

  private decode(stored: unknown): unknown {
    if (Array.isArray(stored)) return stored.map((item) => this.decode(item));
    if (typeof stored !== 'object' || stored === null) return stored;
    const record = stored as Record<string, unknown>;
    if (!Object.hasOwn(record, TAG)) {
      return Object.fromEntries(Object.entries(record).map(([key, item]) => [key, this.decode(item)]));
    }
    const tag = record[TAG];
    if (tag === UNDEFINED) return undefined;
    if (tag === OBJECT) return Object.fromEntries(Object.entries(record.v as object).map(([k, item]) => [k, this.decode(item)]));
    const codec = this.byName.get(tag as string);
    if (!codec) throw new UnstorableValueError(`stored value uses codec '${String(tag)}', which this scheduler does not have`);
    return codec.decode(this.decode(record.v));
  }
}
