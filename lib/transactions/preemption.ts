/**
 * Lock-wait preemption: while an escalated attempt waits for the ordinary
 * attempts in flight to end, those of them stuck in a lock wait are cancelled
 * and retried (escalated) instead of being waited for.
 *
 * Only for databases that look for deadlocks after a wait: PostgreSQL breaks
 * each deadlock only after `deadlock_timeout` (1 s by default), so a crowd
 * caught in lock waits would hold the escalated attempt for one such wait per
 * deadlock among them. Hardware lock elision does the same: taking the fallback
 * lock aborts the speculative transactions in flight.
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

/** Between two cancel rounds for the same waiting escalated attempts. */
const ROUND_SPACING_MS = 50;
/** How long the attempts of a round keep their connections after it, for the cancel signals to land. */
const SIGNAL_GRACE_MS = 10;

export class LockWaitPreemption {
  private readonly inFlight = new Set<Preemptible>();
  private running = false;
  /** Statements cancelled so far. */
  cancelled = 0;

  constructor(
    private readonly knex: Knex,
    private readonly cancel: LockWaitCancel,
    private readonly logger: Logger,
    /** True while escalated attempts wait for their turn. */
    private readonly needed: () => boolean,
  ) {}

  add(attempt: Preemptible): void {
    this.inFlight.add(attempt);
  }

  delete(attempt: Preemptible): void {
    this.inFlight.delete(attempt);
  }

  /** An escalated attempt waits: cancel lock waits now, and every 50 ms while one still waits. */
  request(): void {
    if (this.running) return;
    this.running = true;
    void this.rounds().finally(() => {
      this.running = false;
    });
  }

  private async rounds(): Promise<void> {
    while (this.needed() && this.inFlight.size > 0) {
      await this.round();
      await new Promise((resolve) => setTimeout(resolve, ROUND_SPACING_MS).unref());
    }
  }

  private async round(): Promise<void> {
    const candidates = [...this.inFlight];
    let settle!: () => void;
    const settled = new Promise<void>((resolve) => (settle = resolve));
    for (const attempt of candidates) attempt.preemptionPending(settled);
    // A connection of its own: the pool's may all be held by the attempts in question.
    const client = this.knex.client as unknown as QueryClient;
    let connection: unknown;
    try {
      connection = await client.acquireRawConnection();
      const answer = await client.query(connection, { sql: this.cancel.sql, bindings: [candidates.map((a) => a.sessionId)] });
      this.cancelled += answer.response?.rows?.length ?? 0;
    } catch (err) {
      this.logger.warn({ err }, 'cancelling lock waits for an escalated attempt failed; it waits for them instead');
    } finally {
      if (connection !== undefined) await client.destroyRawConnection(connection).catch(() => undefined);
      // A cancel is a signal the server handles a moment later: give it that moment before the
      // connections may change hands.
      await new Promise((resolve) => setTimeout(resolve, SIGNAL_GRACE_MS).unref());
      settle();
    }
  }
}
