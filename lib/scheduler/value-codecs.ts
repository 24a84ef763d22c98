/** The codecs for values JSON cannot hold: Date and entity refs built in, BigInt on request. */
import type { ArgumentCodec } from '../interfaces.js';
import { EntityRef, ref } from '../context/ref.js';

/** BigInt stored as its decimal string; opt in with `codecs: [bigIntCodec]`. */
export const bigIntCodec: ArgumentCodec<bigint> = {
  name: 'bigint',
  test: (value) => typeof value === 'bigint',
  encode: (value) => value.toString(),
  decode: (stored) => BigInt(stored as string),
};

export const dateCodec: ArgumentCodec<Date> = {
  name: 'date',
  test: (value) => value instanceof Date,
  encode: (value) => {
    if (Number.isNaN(value.getTime())) throw new RangeError('an Invalid Date has no time to store');
    return value.toISOString();
  },
  decode: (stored) => new Date(stored as string),
};

export const refCodec: ArgumentCodec<EntityRef> = {
  name: 'ref',
  test: (value) => value instanceof EntityRef,
  encode: (value) => ({ table: value.table, key: value.key }),
  decode: (stored) => {
    const { table, key } = stored as { table: string; key: EntityRef['key'] };
    return ref(table, key); // validates the stored shape again
  },
};
