/**
 * What one database transaction of an attempt holds under contention, from its
 * BEGIN to its end: its turn at the manager's gate, the database's escalation
 * lock when it needs it, and its place among the lock waits that may be
 * cancelled (PostgreSQL). One per database transaction, so `tx.commit()`
 * followed by a new statement never mixes up the two transactions' holds.
 */
import { discardOnRelease } from './knex-internals.js';
import type { Knex } from 'knex';
import { askingOn, clusterOf, type ClusterHeld, type Dialect, type EscalationLock, type EscalationLockMode, type SendStatement } from '../dialects/index.js';
import type { Logger } from '../interfaces.js';
import type { ContentionGate, GateTurn } from './contention-gate.js';
import type { LockWaitPreemption, Preemptible } from './preemption.js';

/** What a hold needs from its manager. */
export interface ContentionEnvironment {
  readonly knex: Knex;
  readonly dialect: Dialect;
  readonly logger: Logger;
  readonly gate: ContentionGate;
  readonly preemption: LockWaitPreemption | undefined;
}

/** The longest an attempt holding its turn waits for the escalation lock before it goes on without it. */
const LOCK_WAIT_MS = 2000;
/** How long a connection whose lock wait was cancelled is kept, for the cancel signal to land. */
const SIGNAL_GRACE_MS = 5;

export class ContentionHold implements Preemptible {
  private lockMode: EscalationLockMode | undefined;
  /** The lock held in `lockMode`: the dialect's, or its cluster's on a node of a cluster. */
  private heldLock: EscalationLock | undefined;
  /** On a node of a cluster: the hold, a row that outlives this session, so it is given back from another connection if need be. */
  private clusterLock: ClusterHeld<EscalationLock> | undefined;
  sessionId = 0;
  /** The cancel round this transaction was a candidate of, resolving to the sessions it cancelled. */
  private round: Promise<ReadonlySet<number>> | undefined;
  /** A cancel hit this transaction: a cancelled statement of it is a conflict. */
  private preempted = false;
  private left = false;

  private constructor(
    private readonly env: ContentionEnvironment,
    readonly turn: GateTurn,
  ) {}

  /** Takes a turn: the hold at once when it is granted at once (the common case), else a promise of it. */
  static take(env: ContentionEnvironment, turn: GateTurn): ContentionHold | Promise<ContentionHold> {
    const hold = new ContentionHold(env, turn);
    const waiting = env.gate.enter(turn);
    if (!waiting) return hold;
    if (turn === 'escalated') env.preemption?.request();
    return waiting.then(() => hold);
  }

  /**
   * Once the connection is there: joins the preemptible lock waits (an ordinary
   * turn, where the database needs that) and takes the escalation lock when the
   * turn needs it. Undefined when there is nothing to wait for.
   */
  connected(connection: unknown, send: SendStatement): Promise<void> | undefined {
    const { dialect, gate, preemption } = this.env;
    if (preemption) {
      // Every hold knows its session (a late cancel may land on any); only ordinary ones may be cancelled.
      this.sessionId = dialect.lockWaitCancel!.sessionId(connection) ?? 0;
      if (this.sessionId && this.turn === 'shared') {
        preemption.add(this);
        if (gate.contended) preemption.request();
      }
    }
    const lock = dialect.escalationLock;
    if (!lock) return undefined;
    // Escalated attempts take the lock alone. Ordinary attempts of a process that has seen conflicts
    // take it too, so that escalated ones of other processes wait for them instead of colliding:
    // shared where the lock has that mode (PostgreSQL), else alone as well.
    const mode = this.turn === 'escalated' ? 'exclusive' : gate.contended ? (lock.shared ? 'shared' : 'exclusive') : undefined;
    return mode && this.lock(mode, send);
  }

  private async lock(mode: EscalationLockMode, send: SendStatement): Promise<void> {
    const { dialect, knex, gate, logger } = this.env;
    const waitMs = Math.min(LOCK_WAIT_MS, gate.timeoutMs);
    let acquired: boolean;
    try {
      // On a node of a cluster the dialect's lock would be this node's alone. Asked on this connection: the pool may have no other.
      const cluster = await clusterOf(knex, dialect, askingOn(send));
      this.heldLock = cluster ? (this.clusterLock = cluster.escalationLock()) : dialect.escalationLock!;
      acquired = await this.heldLock.acquire(send, mode, waitMs);
    } catch (err) {
      if (dialect.isConnectionFailure(err)) throw err;
      // The cluster's lock table could not be made or written (no CREATE privilege, say): as when the wait ran out.
      logger.warn({ err, mode }, 'an attempt could not take the escalation lock and goes on without it');
      return;
    }
    if (acquired) {
      this.lockMode = mode;
    } else {
      // Progress, not safety, depends on the lock: go on without it rather than hold up this process.
      this.env.logger.warn({ waitMs, mode }, `an attempt waited ${waitMs} ms for the escalation lock (${mode}) and goes on without it`);
    }
  }

  candidateIn(round: Promise<ReadonlySet<number>>): void {
    this.round = round;
  }

  /** Whether `err`, a cancelled statement's error, came from a cancel aimed at this transaction's lock wait. */
  wasPreempted(err: unknown): boolean | Promise<boolean> {
    if (this.preempted) return true;
    const { dialect, preemption } = this.env;
    if (!preemption || !dialect.lockWaitCancel!.isCancelled(err)) return false;
    if (this.sessionId && preemption.cancelledLately(this.sessionId)) return (this.preempted = true);
    const round = this.round;
    if (!round) return false;
    return round.then((cancelled) => (this.preempted ||= cancelled.has(this.sessionId) || preemption.cancelledLately(this.sessionId)));
  }

  /**
   * Before the connection goes back to the pool: leaves the preemptible lock
   * waits (keeping the connection until a cancel aimed at it has landed) and
   * gives the escalation lock back. Undefined when there is nothing to wait for.
   */
  ending(connection: unknown, send: SendStatement): Promise<void> | undefined {
    if (this.sessionId) this.env.preemption!.delete(this);
    if (!this.round && !this.lockMode) return undefined;
    return this.endAsync(connection, send);
  }

  private async endAsync(connection: unknown, send: SendStatement): Promise<void> {
    if (this.round && (await this.round).has(this.sessionId)) await new Promise((resolve) => setTimeout(resolve, SIGNAL_GRACE_MS));
    const mode = this.lockMode;
    if (!mode) return;
    this.lockMode = undefined;
    try {
      await this.heldLock!.release(send, mode);
    } catch (err) {
      // A pooled connection must not keep the lock: the pool drops this one instead of handing it out again.
      discardOnRelease(connection, err);
      this.env.logger.warn({ err }, 'giving back the escalation lock failed; the connection is discarded');
      this.giveClusterLockBack();
    }
  }

  /** The connection's session was closed from outside: nothing of it is to be given back but the turn (and a cluster's lock row). */
  abandon(): void {
    if (this.sessionId) this.env.preemption!.delete(this);
    if (this.lockMode) this.giveClusterLockBack();
    this.lockMode = undefined;
  }

  /** A cluster's lock is a row, which no closed session gives back: given back through another connection, else its lease ends it. */
  private giveClusterLockBack(): void {
    this.clusterLock?.giveAllBack(this.env.knex).catch((err: unknown) => {
      this.env.logger.warn({ err }, 'giving back the escalation lock of the cluster failed; it is free again when its lease runs out');
    });
  }

  /** Gives the turn back (once). */
  leave(): void {
    if (this.left) return;
    this.left = true;
    this.env.gate.leave(this.turn);
  }
}
