/**
 * A worker of the persistent scheduler: claims due jobs in a tiny transaction
 * (FOR UPDATE SKIP LOCKED, then UPDATE by primary key), runs each in a
 * transaction of its own under a lease that a heartbeat renews, and records
 * how it ended. The lease makes crashes recoverable (a dead worker's jobs are
 * claimed again once it runs out) and the fencing on its token makes a job's
 * writes land once, even when a stalled worker wakes up after a take-over.
 */
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import type { WorkerOptions, WorkerStopOptions } from '../../interfaces.js';
import { within, OVER } from '../../support/deadline.js';
import { detached, traceClaim } from '../../support/tracing.js';
import { integerIn } from '../../support/validate.js';
import { ClaimedJob } from './claimed-job.js';
import { JobGroup } from './job-group.js';
import { planSlots } from './job-durations.js';
import type { JobRow } from './rows.js';
import type { WorkerHost } from './worker-host.js';
import { HEARTBEAT_MS, heartbeat, register, unregister as unregisterWorker, type RegisteredWorker } from './worker-registry.js';

/** Most jobs a group may run: their results are written by one statement, 5 parameters each. */
const MAX_GROUP_SIZE = 100;
/** What stop() allows, beyond the grace, for the jobs ended from outside to be handed back. */
const HAND_BACK_MS = 5000;
const noop = () => undefined;
/** The longest interval a timer takes: the keep-alive timer only needs to exist. */
const KEEP_ALIVE_MS = 2 ** 31 - 1;

export class Worker {
  /** How this worker names itself in the jobs it claims (`locked_by`). */
  readonly id: string;
  private readonly concurrency: number;
  /** Queues it takes jobs from, in order of preference. */
  readonly queues: readonly string[];
  private readonly minPoll: number;
  private readonly maxPoll: number;
  private readonly active = new Map<string, { done: Promise<void>; job: ClaimedJob }>();
  /** Slots running a job or a group of jobs. */
  private busy = 0;
  /** Ms within which short jobs share a transaction; 0: each job has its own. */
  private readonly groupWindow: number;
  /** Most jobs one group runs. */
  private readonly groupSize: number;
  private state: 'idle' | 'running' | 'stopping' | 'stopped' = 'idle';
  private loopDone: Promise<void> = Promise.resolve();
  /**
   * Keeps the process alive while the worker runs, as a listening server does: its own waits do not (they must not
   * hold up a process that is done), and while the database is unreachable no connection does either.
   */
  private keepAlive: NodeJS.Timeout | undefined;
  private stopping: Promise<void> | undefined;
  private woken = false;
  private nudge: () => void = noop;
  private unregister: () => Promise<void> = async () => undefined;
  /** Where its process receives wake-ups from other processes, announced in the registry; null: none. */
  private wakeAddress: string | null = null;
  private nextLeaseCheck = 0;
  private nextSweep = 0;
  private nextHeartbeat = 0;
  /** Ms a job whose signal was aborted has before it is ended from outside. */
  private readonly grace: number;

  /** Made by `scheduler.worker()`. @internal */
  constructor(
    private readonly host: WorkerHost,
    options: WorkerOptions = {},
  ) {
    this.id = options.id ?? `${hostname().slice(0, 60)}:${process.pid}:${randomBytes(3).toString('hex')}`;
    if (this.id.length > 100) throw new TypeError(`a worker id is at most 100 characters (locked_by), got ${this.id.length}`);
    this.concurrency = integerIn(options.concurrency ?? host.concurrency, 'concurrency', 1);
    this.queues = options.queues ?? ['default'];
    if (this.queues.length === 0) throw new TypeError('queues must name at least one queue');
    this.minPoll = integerIn(options.minPollInterval ?? 50, 'minPollInterval (ms)', 1);
    this.maxPoll = integerIn(options.maxPollInterval ?? Math.max(2000, this.minPoll), 'maxPollInterval (ms)', this.minPoll);
    this.grace = integerIn(options.grace ?? 5000, 'grace (ms)', 0);
    this.groupWindow = integerIn(options.groupWindow ?? 50, 'groupWindow (ms)', 0);
    this.groupSize = integerIn(options.groupSize ?? 8, 'groupSize', 1, MAX_GROUP_SIZE);
  }

  /** Jobs this worker is running now. */
  get running(): number {
    return this.active.size;
  }

  /** Starts claiming and running jobs. */
  start(): this {
    if (this.state !== 'idle') throw new Error(`worker ${this.id} was already started`);
    this.state = 'running';
    this.keepAlive = setInterval(noop, KEEP_ALIVE_MS);
    this.unregister = this.host.register(this);
    // Outside any transaction and any span of the caller's (a worker started in a request): each claim and run starts its own.
    this.loopDone = this.host.manager.outside(() => detached(() => this.loop()));
    return this;
  }

  /** Claims at once instead of at the next poll (a transaction committed new jobs, in this process or, by a wake-up, another). */
  wake(): void {
    this.woken = true;
    this.nudge();
  }

  /**
   * Stops claiming, lets running jobs finish for up to `timeout` ms, then aborts
   * their signal and hands them back to the queue for another worker.
   */
  stop(options: WorkerStopOptions = {}): Promise<void> {
    const timeout = integerIn(options.timeout ?? 30_000, 'stop({ timeout }) (ms)', 0);
    if (this.state === 'idle' || this.state === 'stopped') return Promise.resolve();
    return (this.stopping ??= this.shutDown(timeout)); // a second call waits for the same end
  }

  private async shutDown(timeout: number): Promise<void> {
    this.state = 'stopping';
    this.nudge();
    try {
      await this.loopDone;
      await this.unregister();
      if (!(await this.settled(timeout))) {
        for (const { job } of this.active.values()) job.handBack();
        // Jobs that ignore their signal are ended from outside after the grace; handing them back takes a moment more.
        await this.settled(this.grace + HAND_BACK_MS);
      }
      // Listed until its jobs have settled: an operator sees who still runs them.
      await this.registry(() => unregisterWorker(this.host.manager.knex, this.host.store.tables, this.id));
    } finally {
      clearInterval(this.keepAlive);
    }
    this.state = 'stopped';
  }

  /** True when the running jobs ended within `ms`. */
  private async settled(ms: number): Promise<boolean> {
    const ended = Promise.allSettled([...this.active.values()].map((a) => a.done));
    return (await within(ended, ms, this.host.manager.clock)).inTime;
  }

  private async loop(): Promise<void> {
    let interval = this.minPoll;
    this.wakeAddress = await this.host.wakeAddress(); // before it is announced: no wake-up is sent to a port not yet bound
    await this.registry(() => register(this.host.manager.knex, this.host.store.tables, this.registered(), this.host.manager.clock.now()));
    this.nextHeartbeat = this.host.manager.clock.now() + HEARTBEAT_MS;
    while (this.state === 'running') {
      await this.host.recurring.tick(); // the recurring jobs due by now: inserted before this claim looks
      const free = this.concurrency - this.busy;
      let claimed = 0;
      if (free > 0) {
        try {
          claimed = await this.claim(free);
        } catch (err) {
          this.host.logger.warn({ err, worker: this.id }, `worker ${this.id}: claiming jobs failed; it tries again`);
        }
      }
      // After the claim: a woken worker claims first, its registry row can wait a claim's time.
      await this.heartbeat();
      await this.sweep();
      // Short waits while there is work, doubling up to maxPoll while claims come back empty.
      // A full worker did not look: it waits for a free slot (which wakes it), then starts short again.
      interval = claimed > 0 || free === 0 ? this.minPoll : Math.min(interval * 2, this.maxPoll);
      // Never past the next recurring instant: a tick is due then (at once when it already is).
      // Never past the next heartbeat either: an idle or full worker stays alive in the registry.
      const wait = Math.min(free === 0 ? this.maxPoll : interval, this.host.recurring.untilDue(), HEARTBEAT_MS);
      if (this.state === 'running' && wait > 0) await this.pause(wait);
    }
  }

  /** Waits `ms`, or less when woken, or when a slot frees after the worker was full. */
  private async pause(ms: number): Promise<void> {
    if (this.woken) {
      this.woken = false;
      return;
    }
    const sleeping = new AbortController();
    await new Promise<void>((resolve) => {
      this.nudge = resolve;
      this.host.manager.clock.sleep(ms, sleeping.signal).then(resolve, noop);
    });
    sleeping.abort(OVER);
    this.nudge = noop;
    this.woken = false;
  }

  private registered(): RegisteredWorker {
    const finished = JSON.stringify(this.host.finishedHour());
    return { id: this.id, host: hostname().slice(0, 100), pid: process.pid, queues: this.queues, concurrency: this.concurrency, finished, wakeAddress: this.wakeAddress };
  }

  /** Renews this worker's heartbeat in the registry, every HEARTBEAT_MS. */
  private async heartbeat(): Promise<void> {
    const now = this.host.manager.clock.now();
    if (now < this.nextHeartbeat) return;
    this.nextHeartbeat = now + HEARTBEAT_MS;
    await this.registry(() => heartbeat(this.host.manager.knex, this.host.store.tables, this.registered(), now));
  }

  /** A registry write: its failure is logged, never stops the worker (the registry is for operators). */
  private async registry(write: () => Promise<void>): Promise<void> {
    try {
      await write();
    } catch (err) {
      this.host.logger.warn({ err, worker: this.id }, `worker ${this.id}: writing the worker registry failed; it goes on`);
    }
  }

  /** Deletes finished rows past their expiry (unfetched results), now and then. */
  private async sweep(): Promise<void> {
    const { manager, store, logger, ttl } = this.host;
    const now = manager.clock.now();
    if (now < this.nextSweep) return;
    this.nextSweep = now + Math.min(ttl, 60_000);
    try {
      while ((await store.sweep(manager.knex, now, 1000)) === 1000) {
        if (this.state !== 'running') return;
      }
    } catch (err) {
      logger.warn({ err, worker: this.id }, `worker ${this.id}: deleting expired results failed; it tries again later`);
    }
  }

  /** Claims jobs for `free` slots (expired leases first, then due jobs of each queue, short ones grouped) and starts them. */
  private async claim(free: number): Promise<number> {
    const { manager, store, quotas } = this.host;
    const now = manager.clock.now();
    const token = randomBytes(16).toString('hex');
    const checkLeases = now >= this.nextLeaseCheck;
    // Read enough rows to fill groups once some jobs are known to be short; the claim takes only those that fit.
    const limit = this.groupSize > 1 && this.host.jobDurations.anyShort(this.groupWindow) ? free * this.groupSize : free;
    // Limited queues are claimed in turns across all processes (their lock held until this transaction ended); others as they are.
    const turn = quotas.turn(this.queues);
    const slots = await traceClaim(this.id, this.queues, () =>
      turn.around(() =>
        manager.run(
          async (tx) => {
            await turn.lock(tx.db); // first, before any row lock
            const found: JobRow[] = [];
            if (checkLeases) {
              // Not our own: a job running here has a live worker even if its heartbeat is late.
              found.push(...(await store.expiredLeases(tx.db, now, free, this.host.localRuns.ids())));
            }
            for (const queue of this.queues) {
              if (found.length >= limit) break;
              found.push(...(await quotas.due(tx.db, queue, now, limit - found.length))); // none of a paused queue (store.duePending)
            }
            // Rows left out stay pending: their locks go with this transaction.
            const planned = planSlots(found, free, { size: this.groupSize, window: this.groupWindow }, this.host.jobDurations);
            const claimed = planned.flat();
            if (claimed.length > 0) await store.claim(tx.db, claimed, { token, worker: this.id, now });
            return planned;
          },
          // The worker's own bookkeeping (claims here, and what ClaimedJob records) touches job rows only, never the app's: it takes
          // no part in escalation, so a crowd of retried requests does not hold up claims.
          // READ COMMITTED: under MySQL's REPEATABLE READ, the claim's locking reads also take
          // gap locks (even on delete-marked index entries of finished jobs), so concurrent
          // claimers block and deadlock each other when they insert into those gaps.
          { name: `claim jobs (worker ${this.id})`, isolationLevel: 'read committed', escalate: false },
        ),
      ),
    );
    if (checkLeases) this.nextLeaseCheck = now + this.maxPoll;
    for (const slot of slots) this.begin(slot, token, now);
    return slots.length;
  }

  /** Starts a slot: one job in its own transaction, or a group of short jobs. */
  private begin(rows: readonly JobRow[], token: string, now: number): void {
    const jobs = rows.map((row) => new ClaimedJob(this.host, this.id, row, token, this.grace));
    const running = jobs.length === 1 ? jobs[0]!.run(now) : new JobGroup(this.host, this.id, jobs, token, this.groupWindow, () => this.wake()).run(now);
    this.busy++;
    const done = running
      .catch((err: unknown) => this.host.logger.error({ err, ids: rows.map((row) => row.id) }, `worker ${this.id}: job(s) ${rows.map((row) => `${row.name} (${row.id})`).join(', ')} could not be settled`))
      .finally(() => {
        const [single] = jobs;
        if (jobs.length === 1 && single!.succeededInMs !== undefined) this.host.jobDurations.record(single!.row.name, single!.succeededInMs);
        for (const job of jobs) this.active.delete(job.row.id);
        this.busy--;
        this.wake(); // a slot is free: claim at once, even if the loop is busy right now
      });
    for (const job of jobs) this.active.set(job.row.id, { done, job });
  }
}
