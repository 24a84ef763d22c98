/**
 * Wake-ups across processes (lib/scheduler/persistent/wake-up.ts), in one process: the worker
 * belongs to one scheduler, the jobs are committed by another (as if in another process: it
 * has no workers to wake in-process), and the worker's clock never moves, so its polls never
 * end: only a wake-up from the committing scheduler can start a job. PostgreSQL's come by
 * NOTIFY, MySQL's as datagrams. The same across real processes: test/reliability/wake-up-processes.test.ts.
 */
import { after, before, beforeEach, it } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket, type Socket } from 'node:dgram';
import type { Knex } from 'knex';
import pg from 'pg';
import { PersistentTransactionalScheduler, TransactionManager, type JobHandle, type Worker } from '../../lib/index.js';
import { eachDialect, type TestDatabase } from '../support/databases.js';
import { ManualClock, barrier, finished, recordingLogger, until } from '../support/helpers.js';

const LONG_POLL = { minPollInterval: 60_000, maxPollInterval: 60_000 };

eachDialect(
  'wake-ups across processes',
  (database) => {
    let knex: Knex;
    let prefix: string;
    let effects: string;
    /** The worker's side: its clock never moves. */
    let workerClock: ManualClock;
    let workerLog: ReturnType<typeof recordingLogger>;
    let workerSide: PersistentTransactionalScheduler;
    /** The committing side: no workers of its own. */
    let tm: TransactionManager;
    let committer: PersistentTransactionalScheduler;

    const define = (scheduler: PersistentTransactionalScheduler) =>
      scheduler.define('effect', async (job: JobHandle, n: number) => {
        await job.db(effects).insert({ job_id: job.id, n });
        return n;
      });

    before(async () => {
      knex = database.knex();
      prefix = `${database.table('wake')}_`;
      effects = database.table('effects');
      await knex.schema.createTable(effects, (t) => {
        t.increments('id');
        t.string('job_id', 32).notNullable();
        t.integer('n').notNullable();
      });
      workerClock = new ManualClock();
      workerLog = recordingLogger();
      workerSide = new PersistentTransactionalScheduler(new TransactionManager(knex, { logger: workerLog, clock: workerClock }), { tablePrefix: prefix });
      define(workerSide);
      // The same frozen time: the committer reads the registry's heartbeats on its own clock.
      tm = new TransactionManager(knex, { logger: recordingLogger(), clock: new ManualClock() });
      await workerSide.migrate();
    });

    // A new one for each test: on a clock that never moves, the addresses a committer read (MySQL) would never be read again.
    beforeEach(() => {
      committer = new PersistentTransactionalScheduler(tm, { tablePrefix: prefix });
      define(committer);
    });

    after(async () => {
      for (const table of ['jobs', 'schema', 'recurring', 'queues', 'workers']) await knex.schema.dropTableIfExists(`${prefix}${table}`);
    });

    /** Starts a worker with a long poll and waits until it listens for wake-ups and sleeps in its (endless) poll. */
    async function sleepingWorker(): Promise<Worker> {
      const worker = workerSide.worker(LONG_POLL).start();
      await until(() => listening(database, knex, prefix, worker.id), 10_000, 'the worker to listen for wake-ups');
      await until(() => workerClock.pending > 0, 10_000, 'the worker to sleep in its poll');
      return worker;
    }

    it('a job committed by another scheduler starts at once in a worker whose poll never ends; stop() stops listening', async () => {
      const worker = await sleepingWorker();
      try {
        const id = await tm.run(async () => committer.schedule('effect', 1));
        assert.deepEqual(await finished(committer, id, 10_000), { state: 'done', value: 1 });
      } finally {
        await worker.stop({ timeout: 1000 });
      }
      assert.equal(await listening(database, knex, prefix, worker.id), false, 'the listening connection (PostgreSQL) or socket (MySQL) is closed');
    });

    it('jobs of several interleaved transactions all run, each once', async () => {
      const worker = await sleepingWorker();
      try {
        const transactions = 6;
        const together = barrier(transactions);
        const ids = (
          await Promise.all(
            Array.from({ length: transactions }, (_, t) =>
              tm.run(async () => {
                const first = committer.schedule('effect', 100 + t);
                await together.arrive(); // all are open at once, and commit in any order
                return [first, committer.schedule('effect', 200 + t)];
              }),
            ),
          )
        ).flat();
        for (const id of ids) assert.equal((await finished(committer, id, 10_000)).state, 'done');
        const rows = (await knex(effects).whereIn('job_id', ids).select('job_id')) as { job_id: string }[];
        assert.deepEqual(rows.map((row) => row.job_id).sort(), [...ids].sort(), 'each job ran exactly once');
      } finally {
        await worker.stop({ timeout: 1000 });
      }
    });

    it('a rolled-back transaction wakes nobody; the commit after it does', async () => {
      const heard = await eavesdrop(database, knex, prefix, ['rolled-back', 'committed']);
      try {
        await assert.rejects(
          tm.run(async () => {
            committer.with({ queue: 'rolled-back' }).schedule('effect', 2);
            throw new Error('roll back');
          }),
          /roll back/,
        );
        await tm.run(async () => committer.with({ queue: 'committed' }).schedule('effect', 3));
        // Sent by one process in this order, so a wake-up of the rolled-back one would have arrived first.
        await until(() => heard.queues.length > 0, 10_000, 'the committed transaction’s wake-up');
        assert.deepEqual(heard.queues, ['committed']);
      } finally {
        await heard.close();
      }
    });

    if (database.name === 'postgres') {
      it('a commit whose queue only its own scheduler’s workers serve sends no NOTIFY; its worker is woken in-process', async () => {
        const heard = await eavesdrop(database, knex, prefix, ['elsewhere']); // another process serves `elsewhere` only
        const own = committer.worker({ ...LONG_POLL, queues: ['own'] }).start();
        try {
          await until(async () => (await knex(`${prefix}workers`).where({ id: own.id }).first()) !== undefined, 10_000, 'the own worker to register');
          const ownJob = await tm.run(async () => committer.with({ queue: 'own' }).schedule('effect', 8));
          await tm.run(async () => committer.with({ queue: 'elsewhere' }).schedule('effect', 9));
          assert.deepEqual(await finished(committer, ownJob, 10_000), { state: 'done', value: 8 }, 'woken in-process, not by its poll');
          await until(() => heard.queues.length > 0, 10_000, 'the wake-up of the queue served elsewhere');
          assert.deepEqual(heard.queues, ['elsewhere'], 'no NOTIFY for the queue only its own workers serve');
        } finally {
          await own.stop({ timeout: 1000 });
          await heard.close();
        }
      });

      it('a LISTEN connection that breaks is made again after a pause, and then wakes its workers: what was sent meanwhile was lost', async () => {
        const worker = await sleepingWorker();
        try {
          await knex.raw('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query = ?', [`LISTEN "${prefix}jobs"`]);
          await until(() => workerLog.lines.some((line) => line.msg.includes('broke; workers poll until it is back')), 10_000, 'the break to be noticed');
          const missed = await tm.run(async () => committer.schedule('effect', 5)); // its NOTIFY reaches no session of the worker's
          await until(() => workerClock.pending >= 2, 10_000, 'the pause before it connects again'); // beside the worker's poll
          await workerClock.advance(1000);
          assert.deepEqual(await finished(committer, missed, 10_000), { state: 'done', value: 5 }, 'woken once listening again');
          await until(() => listening(database, knex, prefix, worker.id), 10_000, 'listening again');
          const id = await tm.run(async () => committer.schedule('effect', 7));
          assert.deepEqual(await finished(committer, id, 10_000), { state: 'done', value: 7 });
        } finally {
          await worker.stop({ timeout: 1000 });
        }
      });
    }

    if (database.name === 'mysql') {
      it('a worker whose wake-up port cannot be bound says so and finds jobs by polling', async () => {
        const taken = createSocket('udp4');
        await new Promise<void>((resolve) => taken.bind(0, '127.0.0.1', resolve));
        const log = recordingLogger();
        const polling = new PersistentTransactionalScheduler(new TransactionManager(knex, { logger: log }), { tablePrefix: prefix, wakeUp: { port: taken.address().port } });
        define(polling);
        const worker = polling.worker({ minPollInterval: 10, maxPollInterval: 20 }).start();
        try {
          await until(() => log.lines.some((line) => /could not receive wake-ups on 127\.0\.0\.1 port \d+ .*by polling/.test(line.msg)), 10_000, 'the warning');
          const id = await tm.run(async () => committer.schedule('effect', 6)); // another scheduler: no wake-up in-process either
          assert.deepEqual(await finished(committer, id, 10_000), { state: 'done', value: 6 });
          assert.equal(await wakeAddress(knex, prefix, worker.id), null, 'no address announced');
        } finally {
          await worker.stop({ timeout: 1000 });
          taken.close();
        }
      });

      it('datagrams that are not well-formed are ignored; the worker goes on and a well-formed one wakes it', async () => {
        const worker = await sleepingWorker();
        const sender = createSocket('udp4');
        try {
          // Committed without a wake-up: only a datagram can start it now.
          const quiet = new PersistentTransactionalScheduler(tm, { tablePrefix: prefix, wakeUp: false });
          define(quiet);
          const id = await tm.run(async () => quiet.schedule('effect', 4));
          const [host, port] = (await wakeAddress(knex, prefix, worker.id)).split(':') as [string, string];
          const send = (text: string | Buffer) => new Promise<void>((resolve, reject) => sender.send(text, Number(port), host, (err) => (err ? reject(err) : resolve())));
          for (const junk of [
            'hello',
            `aftercommit-wake\nother_jobs\ndefault`, // another scheduler's tables
            `aftercommit-wake\n${prefix}jobs\ndefault\nmore`,
            `aftercommit-wake\n${prefix}jobs\n`,
            `aftercommit-wake\n${prefix}jobs\ndefault${' '.repeat(600)}`,
            Buffer.from([0xff, 0xfe, 0x00, 0x0a]),
          ]) {
            await send(junk);
          }
          await new Promise((resolve) => setTimeout(resolve, 300));
          assert.deepEqual(await committer.getResult(id), { state: 'pending' }, 'no junk datagram woke the worker');
          await send(`aftercommit-wake\n${prefix}jobs\ndefault`);
          assert.deepEqual(await finished(committer, id, 10_000), { state: 'done', value: 4 });
        } finally {
          sender.close();
          await worker.stop({ timeout: 1000 });
        }
      });
    }
  },
  ['mysql', 'postgres'],
);

eachDialect('the wakeUp option', (database) => {
  it('is checked where it enters', () => {
    const tm = new TransactionManager(database.knex(), { logger: recordingLogger() });
    const make = (wakeUp: unknown) => new PersistentTransactionalScheduler(tm, { wakeUp: wakeUp as false });
    assert.throws(() => make({ address: '0.0.0.0' }), /wakeUp\.address is announced to other processes, so it cannot be 0\.0\.0\.0/);
    assert.throws(() => make({ address: 'localhost' }), /wakeUp\.address must be an IPv4 or IPv6 address, got "localhost"/);
    assert.throws(() => make({ port: 70_000 }), /wakeUp\.port must be an integer from 0 to 65535/);
    assert.throws(() => make('on'), /wakeUp is \{ address\?, port\? \} or false/);
    make(false);
    make({ address: '::1', port: 0 });
  });
});

/** True while the worker's process listens for wake-ups: PostgreSQL's LISTEN session, or the address in MySQL's registry row and its socket. */
async function listening(database: TestDatabase, knex: Knex, prefix: string, workerId: string): Promise<boolean> {
  if (database.name === 'postgres') {
    const { rows } = (await knex.raw('SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND query = ?', [`LISTEN "${prefix}jobs"`])) as {
      rows: unknown[];
    };
    return rows.length > 0;
  }
  const row = (await knex(`${prefix}workers`).where({ id: workerId }).first('wake_address')) as { wake_address: string | null } | undefined;
  if (!row?.wake_address) return false;
  return bound(row.wake_address);
}

/** True when something holds the UDP port of `address` (binding it fails). */
async function bound(address: string): Promise<boolean> {
  const [host, port] = address.split(':') as [string, string];
  const probe = createSocket('udp4');
  return new Promise((resolve) => {
    probe.once('error', () => (probe.close(), resolve(true)));
    probe.bind(Number(port), host, () => probe.close(() => resolve(false)));
  });
}

async function wakeAddress(knex: Knex, prefix: string, workerId: string): Promise<string> {
  const row = (await knex(`${prefix}workers`).where({ id: workerId }).first('wake_address')) as { wake_address: string };
  return row.wake_address;
}

/**
 * Listens as a worker process would for wake-ups of `queues`: a LISTEN session (PostgreSQL), or a
 * socket whose address a registry row of a live worker announces (MySQL). `queues` lists what arrived.
 */
async function eavesdrop(database: TestDatabase, knex: Knex, prefix: string, queues: string[]): Promise<{ queues: string[]; close(): Promise<void> }> {
  const heard: string[] = [];
  // Registered as a live worker of another process that serves `queues`: committers wake only those.
  const register = async (wakeAddress: string | null) => {
    const now = new ManualClock().now(); // the committer's frozen time: a live heartbeat
    const row = { id: 'eavesdropper', host: 'test', pid: process.pid, queues: JSON.stringify(queues), concurrency: 1, started_at: now, heartbeat_at: now };
    await knex(`${prefix}workers`).insert({ ...row, wake_address: wakeAddress });
    return () => knex(`${prefix}workers`).where({ id: row.id }).delete();
  };
  if (database.name === 'postgres') {
    const client = new pg.Client(database.config.connection as string);
    await client.connect();
    client.on('notification', (message) => heard.push(message.payload ?? ''));
    await client.query(`LISTEN "${prefix}jobs"`);
    const unregister = await register(null);
    return {
      queues: heard,
      close: async () => {
        await unregister();
        await client.end();
      },
    };
  }
  const socket: Socket = createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  socket.on('message', (message) => heard.push(message.toString('utf8').split('\n')[2] ?? ''));
  const unregister = await register(`127.0.0.1:${socket.address().port}`);
  return {
    queues: heard,
    close: async () => {
      await unregister();
      await new Promise<void>((resolve) => socket.close(() => resolve()));
    },
  };
}
