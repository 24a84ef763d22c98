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
 * otherwise wait that long once per deadlock among them. Hardware lock elision
 * does the same: taking the fallback lock aborts the speculative transactions in
 * flight.
 */
import type { Knex } from 'knex';
import type { LockWaitCancel } from '../dialects/index.js';
import type { Logger } from '../interfaces.js';

/** An ordinary attempt in its database transaction, as preemption sees it. */
export interface Preemptible {
  /** The server's id of the attempt's session. */
  readonly sessionId: number;
  /**
   * A cancel may be on its way: a cancelled statement is a conflict, and the
   * connection stays with the attempt until `settled` (so the cancel cannot hit
   * whoever gets the connection next).
   */
  preemptionPending(settled: Promise<void>): void;
}

type QueryClient = {
  acquireRawConnection(): Promise<unknown>;
  destroyRawConnection(connection: unknown): Promise<void>;
  query(connection: unknown, obj: { sql: string; bindings: unknown[] }): Promise<{ response?: { rows?: { id: number }[] } }>;
};

/** How long the connection cancels are sent from stays open after its last round. */
const CONNECTION_IDLE_MS = 5000;
/** Between two cancel rounds. */
const ROUND_SPACING_MS = 10;
/** How long a lock wait may last in a contended process, with no escalated attempt waiting, before it is cancelled. */
const CONTENDED_WAIT_MS = 50;
/** How long the attempts of a round keep their connections after it, for the cancel signals to land. */
const SIGNAL_GRACE_MS = 10;

export class LockWaitPreemption {
  private readonly inFlight = new Set<Preemptible>();
  private running = false;
  /** A connection of its own: the pool's may all be held by the attempts in question. Kept while rounds come often. */
  private connection: Promise<unknown> | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  /** Statements cancelled so far. */
  cancelled = 0;

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

  private get client(): QueryClient {
    return this.knex.client as unknown as QueryClient;
  }

  private closeConnection(): void {
    const connection = this.connection;
    this.connection = undefined;
    void connection?.then((c) => this.client.destroyRawConnection(c)).catch(() => undefined);
  }

  private async rounds(): Promise<void> {
    for (let urgency = this.urgency(); urgency && this.inFlight.size > 0; urgency = this.urgency()) {
      await this.round(urgency === 'at once' ? 0 : CONTENDED_WAIT_MS);
      await new Promise((resolve) => setTimeout(resolve, ROUND_SPACING_MS).unref());
    }
  }

  private async round(minWaitMs: number): Promise<void> {
    const candidates = [...this.inFlight];
    let settle!: () => void;
    const settled = new Promise<void>((resolve) => (settle = resolve));
    for (const attempt of candidates) attempt.preemptionPending(settled);
    try {
      this.connection ??= this.client.acquireRawConnection();
      const answer = await this.client.query(await this.connection, { sql: this.cancel.sql, bindings: [candidates.map((a) => a.sessionId), minWaitMs] });
      this.cancelled += answer.response?.rows?.length ?? 0;
    } catch (err) {
      this.closeConnection();
      this.logger.warn({ err }, 'cancelling lock waits for an escalated attempt failed; it waits for them instead');
    } finally {
      // A cancel is a signal the server handles a moment later: give it that moment before the
      // connections may change hands.
      await new Promise((resolve) => setTimeout(resolve, SIGNAL_GRACE_MS).unref());
      settle();
    }
  }
}
