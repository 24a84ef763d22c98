/**
 * Recurring jobs: declarations (`scheduler.recurring(key, options, name, ...args)`),
 * the instants a cron pattern makes due (a pure function, below), and firing them.
 * Every process whose workers run ticks its declarations; for one key, one short
 * transaction locks the key's row in `<prefix>recurring`, inserts a job row per
 * instant to fire (the unique index on (recurring_key, recurring_instant) refuses a second)
 * and moves the row's `last_instant` on, so each instant fires once across all
 * processes and hosts. See docs/recurring.md.
 */
import { Cron } from 'croner';
import type { Logger, RecurringOptions, RecurringStatus, Transaction } from '../../interfaces.js';
import type { TransactionManager } from '../../transactions/manager.js';
import { INT_MAX, integerIn } from '../../support/validate.js';
import type { NewJob } from './rows.js';
import type { JobStore } from './store.js';

/** What a recurring job does with the instants that came due while no worker could fire them in time. */
export type MissedPolicy = 'skip' | 'once';

const DEFAULT_MISSED: MissedPolicy = 'once';
const DEFAULT_MISSED_AFTER = 60_000;
/** A tick that failed (the database is away) is tried again this much later. */
const RETRY_MS = 1000;
const RECURRING_OPTIONS = ['cron', 'timezone', 'missed', 'missedAfter'];

/** A cron pattern read in a time zone: the instants (ms since the epoch, whole seconds) it fires at. */
export class CronSchedule {
  private readonly cron: Cron;

  /** Throws croner's error for a malformed pattern, and a RangeError for an unknown zone. */
  constructor(
    readonly pattern: string,
    readonly timezone = 'UTC',
  ) {
    new Intl.DateTimeFormat('en-US', { timeZone: timezone }); // an unknown zone throws here
    this.cron = new Cron(pattern, { timezone }); // without a function, croner starts no timer
  }

  /** The first instant after `after`, or null when the pattern never fires again. */
  next(after: number): number | null {
    const next = this.cron.nextRun(new Date(after))?.getTime() ?? null;
    // Always later than `after`, whatever croner makes of a daylight-saving change: loops over instants end.
    return next === null ? null : Math.max(next, Math.floor(after / 1000) * 1000 + 1000);
  }
}

/** One job row to insert: its instant, and whether it is the catch-up run for missed instants. */
export interface DueRun {
  at: number;
  catchUp: boolean;
}

/**
 * What a tick at `now` fires for a recurring job that last fired (or last decided
 * about) the instant `last`. Instants in (last, now] are due; those at most
 * `missedAfter` ms old are on time and each fires; older ones were missed: with
 * `'skip'` none of them fires, with `'once'` the latest of them does (one
 * catch-up run). `last` becomes the latest due instant (unchanged when none is);
 * `missed` says whether any instant was missed.
 */
export function dueRuns(
  schedule: Pick<CronSchedule, 'next'>,
  state: { last: number; now: number; missed: MissedPolicy; missedAfter: number },
): { runs: DueRun[]; last: number; missed: boolean } {
  const { last, now, missed, missedAfter } = state;
  const cutoff = now - missedAfter; // instants before it were missed
  const runs: DueRun[] = [];
  let from = last;
  const latestMissed = last < cutoff ? latestBefore(schedule, cutoff, last) : null;
  if (latestMissed !== null) {
    if (missed === 'once') runs.push({ at: latestMissed, catchUp: true });
    from = latestMissed;
  }
  for (let at = schedule.next(from); at !== null && at <= now; at = schedule.next(at)) runs.push({ at, catchUp: false });
  const latest = runs.length > 0 ? runs[runs.length - 1]!.at : from;
  return { runs, last: latest, missed: latestMissed !== null };
}

/**
 * The latest instant in (floor, t), or null: found in about 90 steps however many
 * instants lie between (a schedule of every second, missed for a month).
 */
function latestBefore(schedule: Pick<CronSchedule, 'next'>, t: number, floor: number): number | null {
  const before = (start: number) => {
    const next = schedule.next(start);
    return next !== null && next < t;
  };
  if (!before(floor)) return null;
  let lo = floor; // an instant follows lo before t
  for (let width = 1000; t - width > floor; width *= 2) {
    if (before(t - width)) {
      lo = t - width;
      break;
    }
  }
  let hi = t; // none follows hi before t
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (before(mid)) lo = mid;
    else hi = mid;
  }
  return schedule.next(lo);
}

/** What the recurring jobs need of their scheduler. */
export interface RecurringDeps {
  manager: TransactionManager;
  store: JobStore;
  logger: Logger;
  /** Checks that `name` is defined and stores its arguments, as schedule() would. */
  encodeArguments(name: string, args: unknown[]): string;
  /** The row of a run of `name` with stored `args` due at `runAt`: the job's defaults from define(), no owner, no metadata. */
  row(name: string, args: string, runAt: number): NewJob;
  /** Wakes this process's workers: jobs were inserted, or a declaration was added. */
  wake(): void;
}

/** What a worker's loop calls. */
export interface RecurringTicker {
  /** Fires what is due of this process's declarations; never throws (failures are logged and tried again). */
  tick(): Promise<void>;
  /** Ms until the next declaration is due (0: now; Infinity: none). */
  untilDue(): number;
}

interface Declaration {
  key: string;
  name: string;
  args: string;
  schedule: CronSchedule;
  missed: MissedPolicy;
  missedAfter: number;
  /** When to tick it next (ms, this process's clock): -Infinity until its first tick. */
  nextDue: number;
}

/** The recurring jobs this process declared, fired by its workers. */
export class RecurringJobs implements RecurringTicker {
  private readonly declared = new Map<string, Declaration>();
  private ticking: Promise<void> | undefined;

  constructor(private readonly deps: RecurringDeps) {}

  /** Validates and records a declaration; the same one again is a no-op, another one under the key an error. */
  declare(key: string, options: RecurringOptions, name: string, args: unknown[]): void {
    if (typeof key !== 'string' || key.length < 1 || key.length > 191) {
      throw new TypeError(`recurring(key): the key must be a string of 1-191 characters, got ${typeof key === 'string' ? `${key.length} characters` : String(key)}`);
    }
    const where = `recurring('${key}')`;
    if (typeof options !== 'object' || options === null) throw new TypeError(`${where}: options must be { cron, timezone?, missed?, missedAfter? }`);
    for (const option of Object.keys(options)) {
      if (!RECURRING_OPTIONS.includes(option)) throw new TypeError(`${where}: unknown option ${JSON.stringify(option)}; the options are ${RECURRING_OPTIONS.join(', ')}`);
    }
    const { cron, timezone = 'UTC', missed = DEFAULT_MISSED, missedAfter = DEFAULT_MISSED_AFTER } = options;
    if (typeof cron !== 'string') throw new TypeError(`${where}: cron must be a cron pattern (a string), got ${String(cron)}`);
    if (typeof timezone !== 'string') throw new TypeError(`${where}: timezone must be an IANA time zone name such as 'Europe/Berlin', got ${String(timezone)}`);
    let schedule: CronSchedule;
    try {
      schedule = new CronSchedule(cron, timezone);
    } catch (err) {
      throw new TypeError(`${where}: ${err instanceof RangeError ? `unknown time zone ${JSON.stringify(timezone)}` : `bad cron pattern ${JSON.stringify(cron)}`}: ${(err as Error).message}`, { cause: err });
    }
    if (missed !== 'skip' && missed !== 'once') throw new TypeError(`${where}: missed must be 'skip' or 'once', got ${String(missed)}`);
    integerIn(missedAfter, `${where}: missedAfter (ms)`, 1000, INT_MAX);
    const now = this.deps.manager.clock.now();
    if (schedule.next(now) === null) throw new TypeError(`${where}: the cron pattern ${JSON.stringify(cron)} never fires`);
    const stored = this.deps.encodeArguments(name, args); // an undefined job, or arguments that cannot be stored, throw here
    const declaration: Declaration = { key, name, args: stored, schedule, missed, missedAfter, nextDue: -Infinity };
    const earlier = this.declared.get(key);
    if (earlier) {
      const same = (d: Declaration) => JSON.stringify([d.name, d.args, d.schedule.pattern, d.schedule.timezone, d.missed, d.missedAfter]);
      if (same(earlier) === same(declaration)) return;
      throw new TypeError(`${where} was already declared otherwise in this process (job '${earlier.name}', cron ${JSON.stringify(earlier.schedule.pattern)})`);
    }
    this.declared.set(key, declaration);
    this.deps.wake(); // workers already running tick it at once
  }

  /** This process's declarations, each with the last instant fired for (by any process) and the next one. */
  async status(): Promise<RecurringStatus[]> {
    const { manager, store } = this.deps;
    const keys = [...this.declared.keys()];
    const rows = keys.length === 0 ? [] : ((await manager.knex(store.tables.recurring).whereIn('key', keys).select('key', 'last_instant')) as { key: string; last_instant: number | string }[]);
    const last = new Map(rows.map((row) => [row.key, Number(row.last_instant)]));
    return [...this.declared.values()].map((d) => {
      const lastInstant = last.get(d.key) ?? null;
      return { key: d.key, job: d.name, cron: d.schedule.pattern, timezone: d.schedule.timezone, lastInstant, nextInstant: d.schedule.next(Math.max(lastInstant ?? 0, manager.clock.now())) };
    });
  }

  untilDue(): number {
    let first = Number.POSITIVE_INFINITY;
    for (const d of this.declared.values()) first = Math.min(first, d.nextDue);
    return Math.max(0, first - this.deps.manager.clock.now());
  }

  tick(): Promise<void> {
    // The workers of a process share one tick.
    return (this.ticking ??= this.fireDue().finally(() => (this.ticking = undefined)));
  }

  private async fireDue(): Promise<void> {
    const { clock } = this.deps.manager;
    let inserted = 0;
    for (const d of this.declared.values()) {
      if (d.nextDue > clock.now()) continue;
      try {
        inserted += await this.fire(d);
      } catch (err) {
        d.nextDue = clock.now() + RETRY_MS;
        this.deps.logger.warn({ err, key: d.key }, `recurring job ${d.key}: firing its due instants failed; it tries again in ${RETRY_MS} ms`);
      }
    }
    if (inserted > 0) this.deps.wake();
  }

  /** Fires what is due of one key; returns how many job rows it inserted. */
  private async fire(d: Declaration): Promise<number> {
    for (let attempt = 1; ; attempt++) {
      const outcome = await this.deps.manager.run((tx) => this.fireIn(tx, d), {
        name: `recurring job ${d.key}`,
        // Like the worker's bookkeeping: no part in escalation, and READ COMMITTED so that the locking read
        // takes no gap locks under MySQL and sees the row as the last process to fire left it.
        isolationLevel: 'read committed',
        escalate: false,
      });
      if (outcome === 'busy') {
        // Another process holds the key's row: it is firing these instants. Look again shortly, in case it stalls.
        d.nextDue = this.deps.manager.clock.now() + RETRY_MS;
        return 0;
      }
      if (outcome) {
        d.nextDue = d.schedule.next(outcome.last) ?? Number.POSITIVE_INFINITY;
        return outcome.inserted;
      }
      if (attempt === 2) throw new Error(`the row of recurring job ${d.key} in ${this.deps.store.tables.recurring} disappeared twice`);
      await this.insertKey(d.key);
    }
  }

  /**
   * Locks the key's row, inserts the job rows of the instants to fire, moves `last_instant` on; undefined
   * when the row is missing, `busy` when another process holds it (never waits for it: a process that
   * stalls while firing must not stop the others' workers, whose loops tick).
   */
  private async fireIn(tx: Transaction, d: Declaration): Promise<{ last: number; inserted: number } | 'busy' | undefined> {
    const { manager, store } = this.deps;
    const keyRow = () => tx.db(store.tables.recurring).where({ key: d.key });
    const row = (await manager.dialect.lockForClaim(keyRow().select('last_instant')))[0] as { last_instant: number | string } | undefined;
    if (!row) return (await keyRow().first('key')) ? 'busy' : undefined;
    const last = Number(row.last_instant);
    const now = manager.clock.now(); // after the lock wait
    const due = dueRuns(d.schedule, { last, now, missed: d.missed, missedAfter: d.missedAfter });
    const rows = due.runs.map((run): NewJob => ({ ...this.deps.row(d.name, d.args, run.at), recurringKey: d.key, recurringInstant: run.at }));
    if (rows.length > 0) await store.insert(tx.db, rows);
    if (due.last !== last) await tx.db(store.tables.recurring).where({ key: d.key }).update({ last_instant: due.last });
    if (due.missed) {
      const what = d.missed === 'once' ? 'one catch-up run fires for the latest of them' : "they are skipped (missed: 'skip')";
      tx.afterCommit((ok) => ok && this.deps.logger.info({ key: d.key, since: last }, `recurring job ${d.key}: instants went unfired for more than ${d.missedAfter} ms; ${what}`));
    }
    return { last: due.last, inserted: due.runs.length };
  }

  /**
   * Adds the key's row, starting from now: a new recurring job fires nothing for
   * the past. Another process adding it at the same moment is no failure.
   */
  private async insertKey(key: string): Promise<void> {
    const { manager, store } = this.deps;
    await manager.run(
      async (tx) => {
        try {
          // In a savepoint: under PostgreSQL a failed statement would doom the whole transaction.
          await tx.db.transaction((savepoint) => savepoint(store.tables.recurring).insert({ key, last_instant: manager.clock.now() }));
        } catch (err) {
          if (!manager.dialect.isUniqueViolation(err)) throw err;
        }
      },
      { name: `recurring job ${key}: add its row`, isolationLevel: 'read committed', escalate: false },
    );
  }
}
