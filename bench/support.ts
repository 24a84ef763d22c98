/** What the benchmarks share: where the database is, and side-by-side rounds. */
import type { Knex } from 'knex';

/** The tables bench/koa-overhead.ts and bench/express-overhead.ts share with their servers (one each: both may run against one database). */
export const KOA_BENCH_TABLE = 'bench_koa_accounts';
export const EXPRESS_BENCH_TABLE = 'bench_express_accounts';

const urls: Record<string, string> = {
  mysql: process.env.AFTERCOMMIT_TEST_MYSQL ?? 'mysql://root@127.0.0.1:3306/test',
  postgres: process.env.AFTERCOMMIT_TEST_POSTGRES ?? 'postgres://postgres@127.0.0.1:5432/test',
};

/** knex config for BENCH_DB (mysql by default: the library's primary database). */
export function benchKnexConfig(poolSize: number): Knex.Config {
  const db = process.env.BENCH_DB ?? 'mysql';
  if (db === 'sqlite') {
    return { client: 'better-sqlite3', connection: { filename: '/tmp/aftercommit-bench.sqlite' }, useNullAsDefault: true };
  }
  const url = urls[db];
  if (!url) throw new Error(`BENCH_DB must be mysql, postgres or sqlite, got ${db}`);
  return { client: db === 'mysql' ? 'mysql2' : 'pg', connection: url, pool: { min: poolSize, max: poolSize } };
}

export interface RoundOptions {
  concurrency: number;
  rounds?: number;
  roundMs?: number;
}

/** Operations completed per variant, summed over all its rounds. */
export type Results = Record<string, { ops: number; ms: number }>;

/** Runs `op` with `concurrency` loops for `ms` milliseconds; returns completed operations. */
async function saturate(op: () => Promise<unknown>, concurrency: number, ms: number): Promise<number> {
  const deadline = performance.now() + ms;
  let ops = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < deadline) {
        await op();
        ops++;
      }
    }),
  );
  return ops;
}

/**
 * Alternates the variants in rounds (A B A B ... with the order flipped every
 * round), after one warm-up round each, and sums what each completed.
 */
export async function measureRounds(
  variants: Record<string, () => Promise<unknown>>,
  { concurrency, rounds = Number(process.env.BENCH_ROUNDS ?? 10), roundMs = Number(process.env.BENCH_ROUND_MS ?? 2000) }: RoundOptions,
): Promise<Results> {
  const names = Object.keys(variants);
  for (const name of names) await saturate(variants[name]!, concurrency, Math.min(roundMs, 1000));
  const results: Results = Object.fromEntries(names.map((n) => [n, { ops: 0, ms: 0 }]));
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 === 0 ? names : [...names].reverse();
    for (const name of order) {
      const started = performance.now();
      results[name]!.ops += await saturate(variants[name]!, concurrency, roundMs);
      results[name]!.ms += performance.now() - started;
    }
  }
  return results;
}

/** Prints ops/s per variant and the candidate/baseline ratio. */
export function report(
  title: string,
  results: Results,
  { baseline, candidate, goal }: { baseline: string; candidate: string; goal: number },
): number {
  const rate = (name: string) => (results[name]!.ops / results[name]!.ms) * 1000;
  console.log(`\n${title}  (database: ${process.env.BENCH_DB ?? 'mysql'})`);
  for (const name of Object.keys(results)) console.log(`  ${name.padEnd(34)} ${rate(name).toFixed(0).padStart(8)} /s`);
  const ratio = rate(candidate) / rate(baseline);
  console.log(`  ratio ${candidate} / ${baseline}: ${ratio.toFixed(3)}  (goal >= ${goal})`);
  return ratio;
}

/** The given percentiles (0-100) of `values`, nearest-rank. */
export function percentiles(values: number[], ranks: number[]): Record<number, number> {
  const sorted = [...values].sort((a, b) => a - b);
  return Object.fromEntries(ranks.map((p) => [p, sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!]));
}

/** The URL of a database server, as benchKnexConfig uses it (for benchmarks that need both, or a peer's own client). */
export function benchDatabaseUrl(db: 'mysql' | 'postgres'): string {
  return urls[db]!;
}

/**
 * One-row transactions per second from `connections` connections of `db`, each
 * updating a row of its own: no lock waits, so what limits the rate is committing
 * (the redo log flush) and the round trips. `startMeter` is started after the
 * warm-up and read when the measurement ends (e.g. a CPU meter).
 */
export async function measureCommitRate<M>(
  db: Knex,
  { table, connections, ms, startMeter }: { table: string; connections: number; ms: number; startMeter?: () => () => M },
): Promise<{ rate: number; meter: M | undefined }> {
  await db.schema.dropTableIfExists(table);
  await db.schema.createTable(table, (t) => {
    t.integer('id').primary();
    t.integer('n').notNullable();
  });
  try {
    await db(table).insert(Array.from({ length: connections }, (_, id) => ({ id, n: 0 })));
    const saturate = async (duration: number) => {
      const deadline = performance.now() + duration;
      const counts = await Promise.all(
        Array.from({ length: connections }, async (_, id) => {
          let n = 0;
          for (; performance.now() < deadline; n++) await db.transaction((trx) => trx(table).where({ id }).increment('n', 1));
          return n;
        }),
      );
      return counts.reduce((a, b) => a + b, 0);
    };
    await saturate(500); // opens the pool's connections
    const readMeter = startMeter?.();
    const started = performance.now();
    const commits = await saturate(ms);
    return { rate: (commits / (performance.now() - started)) * 1000, meter: readMeter?.() };
  } finally {
    await db.schema.dropTableIfExists(table);
  }
}

/**
 * Adds `finished` done rows to a jobs table that holds at least one job: one
 * finished row shaped like a real one, then INSERT … SELECT doubling, a handful
 * of statements instead of a million rows through the driver.
 */
export async function fillDoneRows(knex: Knex, table: string, finished: number): Promise<void> {
  const template = (await knex(table).first()) as Record<string, unknown>;
  const now = Date.now();
  await knex(table).insert({ ...template, id: 'd', state: 'done', runs: 1, result: '[null]', progress_fraction: 1, finished_at: now, expires_at: now + 3_600_000 });
  const columns = Object.keys(template).filter((c) => c !== 'id');
  // Each round appends its own letter to every id copied: new ids are unique and end unlike any older one.
  for (let round = 0, rows = 1; rows < finished; round++) {
    const copy = Math.min(rows, finished - rows);
    const suffix = 'abcdefghijklmnopqrstuvwxyz'[round]!; // a literal: PostgreSQL cannot type a parameter of CONCAT
    await knex.raw(`INSERT INTO ?? (id, ??) SELECT CONCAT(id, '${suffix}'), ?? FROM ?? WHERE state = 'done' LIMIT ?`, [table, columns, columns, table, copy]);
    rows += copy;
  }
}
