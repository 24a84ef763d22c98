/**
 * Lock-wait preemption (PostgreSQL): ordinary attempts stuck in a lock wait are
 * cancelled and run again, escalated, instead of being waited for:
 * - at once, while an escalated attempt of this process waits for the attempts
 *   in flight to end;
 * - after a short wait, while the process is contended (it has seen conflicts
 *   lately): that breaks deadlocks with other processes' attempts long before
 *   the server would.
 *
 * PostgreSQL looks for a deadlock only after `deadlock_timeout` (1 s by default,
 * changeable only by a superuser), so a crowd caught in lock waits would
 * otherwise wait that long once per deadlock among them.
 */
import type { Knex } from 'knex';
import type { LockWaitCancel } from '../dialects/index.js';
import type { Logger } from '../interfaces.js';
import { systemClock } from '../support/clock.js';
import { within } from '../support/deadline.js';
import { closeRawConnection, openRawConnection, queryOn } from './knex-internals.js';

/** An ordinary attempt's database transaction, as preemption sees it. */
export interface Preemptible {
  /** The server's id of its session. */
  readonly sessionId: number;
  /** A cancel round is on its way; it resolves to the sessions it cancelled. */
  candidateIn(round: Promise<ReadonlySet<number>>): void;
}

/** How long the connection cancels are sent from stays open after its last round. */
const CONNECTION_IDLE_MS = 5000;
/** How long a round may take before its candidates stop waiting for it. */
const ROUND_TIMEOUT_MS = 2000;
/** How long after a cancel a cancelled statement on that session still counts as preempted. */
const LATE_SIGNAL_MS = 2000;
/** Between two cancel rounds. */
const ROUND_SPACING_MS = 10;
/** How long a lock wait may last in a contended process, with no escalated attempt waiting, before it is cancelled. */
const CONTENDED_WAIT_MS = 50;

export class LockWaitPreemption {
  private readonly inFlight = new Set<Preemptible>();
  private running = false;
  /** A connection of its own: the pool's may all be held by the attempts in question. Kept while rounds come often. */
  private connection: Promise<unknown> | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  /** Lock waits cancelled so far (cancel signals sent). */
  cancelled = 0;
  /** When a cancel was last sent to each session, for LATE_SIGNAL_MS. */
  private readonly cancelledAt = new Map<number, number>();

  constructor(
    private readonly knex: Knex,
    private readonly cancel: LockWaitCancel,
    private readonly logger: Logger,
    /** Whether lock waits are to be cancelled now: at once, after CONTENDED_WAIT_MS, or not at all. */
    private readonly urgency: () => 'at once' | 'after a while' | undefined,
  ) {}

  add(attempt: Preemptible): void {
    this.inFlight.add(attempt);
  }

  delete(attempt: Preemptible): void {
    this.inFlight.delete(attempt);
  }

  /** Cancels lock waits now and every 10 ms while `urgency` says so and ordinary attempts are in flight. */
  request(): void {
    if (this.running) return;
    this.running = true;
    clearTimeout(this.idleTimer);
    void this.rounds().finally(() => {
      this.running = false;
      this.idleTimer = setTimeout(() => this.closeConnection(), CONNECTION_IDLE_MS).unref();
    });
  }

  private closeConnection(): void {
    const connection = this.connection;
    this.connection = undefined;
    void connection?.then((c) => closeRawConnection(this.knex, c)).catch(() => undefined);
  }

  private async rounds(): Promise<void> {
    for (let urgency = this.urgency(); urgency && this.inFlight.size > 0; urgency = this.urgency()) {
      await this.round(urgency === 'at once' ? 0 : CONTENDED_WAIT_MS);
      await new Promise((resolve) => setTimeout(resolve, ROUND_SPACING_MS).unref());
    }
  }

  private async round(minWaitMs: number): Promise<void> {
    const candidates = [...this.inFlight];
    const round = this.cancelLockWaits(candidates.map((c) => c.sessionId), minWaitMs);
    for (const candidate of candidates) candidate.candidateIn(round);
    const cancelled = await round;
    this.cancelled += cancelled.size;
    const now = Date.now();
    for (const [id, at] of this.cancelledAt) if (now - at > LATE_SIGNAL_MS) this.cancelledAt.delete(id);
    for (const id of cancelled) this.cancelledAt.set(id, now);
  }

  /**
   * True when a cancel was sent to session `id` lately: a signal that the server
   * handled late may have hit the next transaction on that connection, which is
   * then preempted too rather than failed.
   */
  cancelledLately(id: number): boolean {
    const at = this.cancelledAt.get(id);
    return at !== undefined && Date.now() - at <= LATE_SIGNAL_MS;
  }

  /** The sessions among `ids` whose lock wait was cancelled; none when that could not be done within ROUND_TIMEOUT_MS. */
  private async cancelLockWaits(ids: number[], minWaitMs: number): Promise<ReadonlySet<number>> {
    try {
      // Wall-clock time: it bounds a wait for the server, whatever clock the manager was given.
      const answer = await within(this.sendCancels(ids, minWaitMs), ROUND_TIMEOUT_MS, systemClock);
      if (!answer.inTime) throw new Error(`no answer within ${ROUND_TIMEOUT_MS} ms`);
      return answer.value;
    } catch (err) {
      this.closeConnection();
      this.logger.warn({ err }, 'cancelling lock waits under contention failed; they are waited for instead');
      return new Set();
    }
  }

  private async sendCancels(ids: number[], minWaitMs: number): Promise<ReadonlySet<number>> {
    this.connection ??= openRawConnection(this.knex).then((connection) => {
      this.cancel.unref(connection); // an idle control connection must not keep the process alive
      return connection;
    });
    const answer = await queryOn(this.knex, await this.connection, this.cancel.sql, [ids, minWaitMs]);
    const rows = (answer.response as { rows?: { id: number }[] } | undefined)?.rows ?? [];
    return new Set(rows.map((row) => Number(row.id)));
  }
}
