/**
 * Throughput of `tm.run` against a hand-written `knex.transaction` doing the same
 * two statements (SELECT a balance FOR UPDATE, UPDATE it), measured side by side in one run:
 * the two variants alternate in short rounds so that drift of the machine or the
 * server affects both alike.
 *
 *   node --import tsx bench/transaction-overhead.ts
 *   BENCH_DB=postgres|sqlite  BENCH_ROUNDS=10  BENCH_ROUND_MS=2000  BENCH_CONCURRENCY=16
 */
import knexFactory, { type Knex } from 'knex';
import { TransactionManager } from '../dist/index.js';
import { benchKnexConfig, measureRounds, report } from './support.js';

const ROWS = 1000;
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 16);
const knex: Knex = knexFactory(benchKnexConfig(concurrency));
const table = 'bench_tx_overhead';

async function prepare() {
  await knex.schema.dropTableIfExists(table);
  await knex.schema.createTable(table, (t) => {
    t.integer('id').primary();
    t.integer('balance').notNullable();
  });
  const rows = Array.from({ length: ROWS }, (_, id) => ({ id, balance: 0 }));
  for (let i = 0; i < rows.length; i += 200) await knex(table).insert(rows.slice(i, i + 200));
}

const pick = () => Math.floor(Math.random() * ROWS);

let committed = 0;
const locking = process.env.BENCH_DB !== 'sqlite'; // SQLite locks the whole database anyway

async function twoStatements(db: Knex | Knex.Transaction) {
  const id = pick();
  const select = db(table).where({ id }).first('balance');
  const row = await (locking ? select.forUpdate() : select); // without the lock, concurrent increments get lost
  await db(table).where({ id }).update({ balance: row.balance + 1 });
}

const counted = (op: () => Promise<unknown>) => async () => {
  await op();
  committed++;
};

const tm = new TransactionManager(knex);

/** Both variants must send the same statements (BEGIN, SELECT, UPDATE, COMMIT), or the ratio means nothing. */
async function checkSameStatements() {
  for (const [name, op] of Object.entries(variants)) {
    const sent: string[] = [];
    const listener = (q: { sql: string }) => sent.push(q.sql.split(' ')[0]!.replace(';', '').toUpperCase());
    knex.on('query', listener);
    await op();
    knex.off('query', listener);
    console.log(`  ${name.padEnd(34)} sends ${sent.join(', ')}`);
  }
}
const variants = {
  'knex.transaction (by hand)': counted(() => knex.transaction((trx) => twoStatements(trx))),
  'tm.run (aftercommit)': counted(() => tm.run((tx) => twoStatements(tx.db))),
};

await prepare();
await checkSameStatements();
const results = await measureRounds(variants, { concurrency });
report('transaction overhead: SELECT + UPDATE per transaction', results, {
  baseline: 'knex.transaction (by hand)',
  candidate: 'tm.run (aftercommit)',
  goal: 0.97,
});
// Every transaction of both variants committed its increment, no more, no less.
const total = await knex(table).sum({ n: 'balance' }).first();
if (Number(total!.n) !== committed) throw new Error(`lost updates: ${total!.n} increments stored, ${committed} committed`);
console.log(`  check: ${committed} transactions committed, ${total!.n} increments stored`);
await knex.schema.dropTableIfExists(table);
await knex.destroy();
