/**
 * How job arguments, results and the scheduling transaction's metadata are
 * stored: JSON, plus tagged values for Date, entity refs and contexts, and any
 * codecs the user adds. Whatever cannot be stored faithfully (functions,
 * cycles, class instances, NaN, BigInt without a codec, nesting deeper than
 * MAX_DEPTH, too many bytes) is refused with an error that says where it is.
 * Both schedulers store this form, so a job never shares objects with the
 * request that scheduled it.
 */
import type { ArgumentCodec, TransactionMeta } from '../interfaces.js';
import { UnstorableValueError } from '../errors.js';
import { dateCodec, refCodec } from './value-codecs.js';
import type { JobLineage } from './lineage.js';

/** Marks a tagged value: `{ "$ac": codec name, "v": encoded }`. */
const TAG = '$ac';
/** Escapes a user object that happens to have a `$ac` key. */
const OBJECT = 'object';
const UNDEFINED = 'undefined';

/**
 * How deep a stored value may nest: each array and object is a level, and so is
 * each tagged value (undefined, a Date, a ref, a context, a codec's value, an
 * object with a `$ac` key). 100, like Ruby's JSON `max_nesting`: far more than
 * data handed to a job needs, and far less than what exhausts the stack of the
 * recursive encoder and decoder (or of JSON.stringify, a few thousand levels).
 * Encoder and decoder count the same levels, so whatever is stored decodes.
 */
const MAX_DEPTH = 100;

/** Largest stored metadata: the jobs table keeps it in a TEXT column, 65,535 bytes on MySQL/MariaDB; checked on every database so an app behaves alike on all. */
const MAX_META_BYTES = 65_535;

/** Paths longer than this are shortened in messages (a path 100 levels deep can be long). */
const MAX_PATH_IN_MESSAGE = 200;

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

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

/** Shortens a long path for a message, keeping both ends. */
function shortened(path: string): string {
  if (path.length <= MAX_PATH_IN_MESSAGE) return path;
  const half = MAX_PATH_IN_MESSAGE / 2;
  return `${path.slice(0, half)}…${path.slice(-half)}`;
}

const TOO_DEEP =
  `nested more than ${MAX_DEPTH} levels deep when stored (each array and object is a level; undefined, a Date, a ref or a codec's value one more): ` +
  'flatten the data, or pass an id and load it in the job';

/** What is being stored, for the messages of the limits. */
interface Subject {
  /** Names a value that cannot be stored: `path` is where it is, `reason` what it is. */
  fail(path: string, reason: string): string;
  /** The path of the i-th top-level value, e.g. `argument 1`. */
  label(index: number): string;
  /** E.g. `the arguments of 'echo'`. */
  what: string;
  /** Whether `what` takes a plural verb. */
  plural: boolean;
  limit: number;
  /** Where the limit comes from, e.g. `maxArgumentBytes`. */
  limitName: string;
  advice: string;
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
    return this.encode(args, {
      fail: (path, reason) => `cannot schedule '${job}': ${path} is ${reason}`,
      label: (i) => `argument ${i + 1}`,
      what: `the arguments of '${job}'`,
      plural: true,
      limit: this.options.maxArgumentBytes,
      limitName: 'maxArgumentBytes',
      advice: 'pass ids and load the data in the job',
    });
  }

  /** The stored form of a job's result, or an error saying what in it cannot be stored. */
  encodeResult(job: string, value: unknown): string {
    return this.encode([value], {
      fail: (path, reason) => `the result of job '${job}' cannot be stored: ${path} is ${reason}`,
      label: () => 'result',
      what: `the result of '${job}'`,
      plural: false,
      limit: this.options.maxResultBytes,
      limitName: 'maxResultBytes',
      advice: 'store large output in a table and return its id',
    });
  }

  /**
   * The stored form of the scheduling transaction's metadata, which travels
   * with the job; checked at schedule() like the arguments, so that metadata the
   * jobs table cannot keep fails the request's schedule() and not its COMMIT.
   */
  encodeMeta(job: string, meta: TransactionMeta, lineage?: JobLineage): string {
    return this.encode(lineage ? [meta, lineage] : [meta], {
      fail: (path, reason) => `cannot schedule '${job}': the transaction's ${path} is ${reason}`,
      label: (i) => (i === 0 ? 'meta' : 'lineage'),
      what: `cannot schedule '${job}': the transaction's meta`,
      plural: false,
      limit: MAX_META_BYTES,
      limitName: 'a TEXT column on MySQL/MariaDB',
      advice: 'keep meta.extension to ids and short notes',
    });
  }

  decodeArguments(text: string): unknown[] {
    return this.decodeStored(text);
  }

  /** Decodes what encodeResult or encodeMeta stored. */
  decodeValue(text: string): unknown {
    return this.decodeStored(text)[0];
  }

  private encode(values: readonly unknown[], subject: Subject): string {
    const refuse = (path: string, reason: string) => new UnstorableValueError(subject.fail(shortened(path), reason));
    const ancestors = new Set<object>();
    // Each value stored takes at least one byte, so more values than the limit has bytes cannot
    // fit: counting them refuses a sparse array of billions of holes, or an array that holds the
    // same array twice, sixty times over, before walking all of it.
    let counted = 0;
    const walk = (value: unknown, path: string, depth: number): Json => {
      if (++counted > subject.limit) throw new UnstorableValueError(tooManyValues(subject));
      switch (typeof value) {
        case 'string':
        case 'boolean':
          return value;
        case 'number':
          if (Number.isFinite(value)) return value;
          throw refuse(path, describe(value));
        case 'undefined':
          if (depth >= MAX_DEPTH) throw refuse(path, TOO_DEEP);
          return { [TAG]: UNDEFINED };
        case 'object':
          if (value === null) return null;
          break;
        default:
          if (typeof value !== 'bigint' || !this.codecs.some((c) => c.test(value))) throw refuse(path, describe(value));
      }
      if (depth >= MAX_DEPTH) throw refuse(path, TOO_DEEP);
      const codec = this.codecs.find((c) => c.test(value));
      if (codec) {
        let encoded: unknown;
        try {
          encoded = codec.encode(value);
        } catch (err) {
          throw refuse(path, `refused by codec '${codec.name}': ${(err as Error).message}`);
        }
        return { [TAG]: codec.name, v: walk(encoded, path, depth + 1) };
      }
      const object = value as object;
      if (ancestors.has(object)) throw refuse(path, 'a reference back to one of its own containers (a cycle)');
      if (!Array.isArray(object) && !isPlainObject(object)) throw refuse(path, describe(object));
      ancestors.add(object);
      try {
        // Array.from visits holes (map would skip them, and JSON would turn them into null).
        if (Array.isArray(object)) return Array.from(object, (item, i) => walk(item, `${path}[${i}]`, depth + 1));
        const entries = Object.entries(object).filter(([, item]) => item !== undefined);
        // An object with a key named like the tag is stored inside a tag of its own: one level more.
        const escaped = entries.some(([key]) => key === TAG);
        if (escaped && depth + 1 >= MAX_DEPTH) throw refuse(path, TOO_DEEP);
        const out: Record<string, Json> = {};
        for (const [key, item] of entries) {
          // defineProperty: a key named __proto__ stays a key (assignment would set the prototype).
          Object.defineProperty(out, key, { value: walk(item, `${path}.${key}`, depth + (escaped ? 2 : 1)), enumerable: true, writable: true, configurable: true });
        }
        return escaped ? { [TAG]: OBJECT, v: out } : out;
      } finally {
        ancestors.delete(object);
      }
    };
    const stored = values.map((value, i) => walk(value, subject.label(i), 0));
    const text = JSON.stringify(stored);
    const bytes = Buffer.byteLength(text);
    if (bytes > subject.limit) {
      const largest = largestPart(stored, subject.label, bytes);
      throw new UnstorableValueError(
        `${subject.what} ${subject.plural ? 'take' : 'takes'} ${bytes} bytes when stored, over the limit of ${subject.limit} (${subject.limitName}): ` +
          `${subject.advice}${largest ? ` (${shortened(largest.path)} takes ${largest.bytes} of them)` : ''}`,
      );
    }
    return text;
  }

  /** Parses stored values (a list) and decodes each; never deeper than the encoder stores. */
  private decodeStored(text: string): unknown[] {
    const stored: unknown = JSON.parse(text);
    if (!Array.isArray(stored)) throw new UnstorableValueError('a stored value is not the list this version of aftercommit writes; it was changed since');
    return stored.map((value) => this.decode(value, 0));
  }

  /** `depth` counts the stored containers around `stored`, as the encoder counted them. */
  private decode(stored: unknown, depth: number): unknown {
    if (typeof stored !== 'object' || stored === null) return stored;
    if (depth >= MAX_DEPTH) throw storedTooDeep();
    if (Array.isArray(stored)) return stored.map((item) => this.decode(item, depth + 1));
    const record = stored as Record<string, unknown>;
    if (!Object.hasOwn(record, TAG)) return this.decodeEntries(record, depth + 1);
    const tag = record[TAG];
    if (tag === UNDEFINED) return undefined;
    if (tag === OBJECT) {
      if (depth + 1 >= MAX_DEPTH) throw storedTooDeep();
      return this.decodeEntries(record.v as Record<string, unknown>, depth + 2);
    }
    const codec = this.byName.get(tag as string);
    if (!codec) throw new UnstorableValueError(`stored value uses codec '${String(tag)}', which this scheduler does not have`);
    return codec.decode(this.decode(record.v, depth + 1));
  }

  private decodeEntries(record: Record<string, unknown>, depth: number): Record<string, unknown> {
    return Object.fromEntries(Object.entries(record).map(([key, item]) => [key, this.decode(item, depth)]));
  }
}

function tooManyValues(subject: Subject): string {
  const [hold, take] = subject.plural ? ['hold', 'they take'] : ['holds', 'it takes'];
  return (
    `${subject.what} ${hold} more than ${subject.limit} values, so ${take} more than the limit of ${subject.limit} bytes ` +
    `(${subject.limitName}) when stored: ${subject.advice}`
  );
}

function storedTooDeep(): UnstorableValueError {
  return new UnstorableValueError(
    `a stored value is nested more than ${MAX_DEPTH} levels deep: it was not written by this version of aftercommit, or was changed since`,
  );
}

/** How many levels largestPart looks into: enough for meta.extension.<key>, bounded so a refusal stays cheap. */
const LARGEST_PART_LEVELS = 5;

/**
 * The part of stored values that holds more than half of their `total` bytes,
 * as deep as it can be named (a user's path: arrays and objects, not inside a
 * codec's value), so a message can say what makes them too large.
 */
function largestPart(stored: Json[], label: (index: number) => string, total: number): { path: string; bytes: number } | undefined {
  let found: { path: string; bytes: number } | undefined;
  let children: [path: string, value: Json][] = stored.map((value, i) => [label(i), value]);
  for (let level = 0; level < LARGEST_PART_LEVELS && children.length > 0; level++) {
    const big = children
      .map(([path, value]) => ({ path, value, bytes: Buffer.byteLength(JSON.stringify(value)) }))
      .find((child) => child.bytes * 2 > total);
    if (!big) break;
    found = { path: big.path, bytes: big.bytes };
    children = namedChildren(big.path, big.value);
  }
  return found;
}

/** The children of a stored value, with their paths as the user wrote them. */
function namedChildren(path: string, value: Json): [string, Json][] {
  if (Array.isArray(value)) return value.map((item, i) => [`${path}[${i}]`, item]);
  if (typeof value !== 'object' || value === null) return [];
  if (!Object.hasOwn(value, TAG)) return Object.entries(value).map(([key, item]) => [`${path}.${key}`, item]);
  return value[TAG] === OBJECT ? namedChildren(path, value.v as Json) : [];
}
