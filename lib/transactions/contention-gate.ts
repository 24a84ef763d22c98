/**
 * The contention gate of one TransactionManager: how the attempts of this
 * process take turns at the database once they have started to collide.
 *
 * - An ordinary attempt enters *shared* when its database transaction begins
 *   (its first statement) and leaves when that transaction ends. While nothing
 *   collides this is a counter increment: no promise, no await.
 * - An *escalated* attempt (one that follows a conflict) enters alone: it waits
 *   until the attempts in flight have ended, and ordinary attempts that arrive
 *   meanwhile wait for it: it meets no other transaction of this manager.
 * - Each conflict halves how many ordinary attempts may be in flight (at least
 *   one): a crowd on hot rows then goes through one at a time instead of
 *   colliding in waves (on PostgreSQL every wave waits out deadlock_timeout). A
 *   second without a conflict doubles the limit back; an idle gate resets it.
 *   It never exceeds the pool's size: beyond that attempts would only wait for
 *   a connection, and an escalated attempt would have to wait for all of them.
 * - Turns are phase-fair: when an escalated attempt ends, the ordinary attempts
 *   that waited for it go in (up to the limit) before the next escalated one, so
 *   a stream of retried transactions does not hold other work back for long.
 *
 * Attempts never wait here while holding a connection: the gate is passed before
 * the pool is asked, so the connections are held by attempts that have their
 * turn, and these end.
 */
import type { Clock, ContentionStats } from '../interfaces.js';
import { ContentionTimeoutError } from '../errors.js';

/** How long the limit stays lowered after a conflict before it doubles. */
const RECOVERY_MS = 1000;

export type GateTurn = 'shared' | 'escalated';

interface Waiter {
  readonly turn: GateTurn;
  readonly since: number;
  grant(): void;
}

export class ContentionGate {
  /** Ordinary attempts whose database transaction is open. */
  private shared = 0;
  /** An escalated attempt's database transaction is open. */
  private alone = false;
  private readonly escalatedWaiters: Waiter[] = [];
  private readonly sharedWaiters: Waiter[] = [];
  /** How many ordinary attempts may be in flight; the pool's size while nothing collides. */
  private limit: number;
  private lastLimitChange = 0;
  private readonly stats = { escalations: 0, gateWaits: 0, gateWaitMs: 0, longestGateWaitMs: 0 };

  constructor(
    /** The pool's size: more ordinary attempts in flight would only wait for a connection. */
    private readonly capacity: number,
    /** How long an attempt may wait for its turn (and an escalated one for the database's lock) before it gives up. */
    readonly timeoutMs: number,
    private readonly clock: Clock,
  ) {
    this.limit = capacity;
  }

  /** Takes a turn; returns undefined when it was granted at once (the common case), else a promise of it. */
  enter(turn: GateTurn): Promise<void> | undefined {
    if (this.mayEnterNow(turn)) {
      this.take(turn);
      return undefined;
    }
    return this.wait(turn);
  }

  /** Gives a turn back (its database transaction has ended) and lets the next ones in. */
  leave(turn: GateTurn): void {
    if (turn === 'escalated') {
      this.alone = false;
      this.admitWaitingShared();
    } else {
      this.shared--;
    }
    if (this.shared === 0 && !this.alone && this.sharedWaiters.length === 0 && this.escalatedWaiters.length === 0) {
      this.limit = this.capacity; // the crowd has gone
    }
    this.dispatch();
  }

  /**
   * An attempt of this process collided with another transaction: fewer
   * ordinary attempts in flight from now on; `escalating` when its retry runs
   * escalated.
   */
  conflict(escalating: boolean): void {
    if (escalating) this.stats.escalations++;
    this.limit = Math.max(1, Math.floor(Math.min(this.limit, this.shared + 1) / 2));
    this.lastLimitChange = this.clock.now();
  }

  /** True while recent conflicts keep the limit below the pool's size. */
  get contended(): boolean {
    this.recover();
    return this.limit < this.capacity;
  }


  /** True while escalated attempts wait for their turn. */
  get escalatedWaiting(): boolean {
    return this.escalatedWaiters.length > 0;
  }

  snapshot(): Omit<ContentionStats, 'preempted'> {
    this.recover();
    return { ...this.stats, concurrencyLimit: this.limit };
  }

  private mayEnterNow(turn: GateTurn): boolean {
    if (this.alone || this.escalatedWaiters.length > 0) return false;
    if (turn === 'escalated') return this.shared === 0;
    if (this.sharedWaiters.length > 0) return false;
    if (this.limit < this.capacity) this.recover();
    return this.shared < this.limit;
  }

  /** Doubles a lowered limit for each second that has passed without a conflict. */
  private recover(): void {
    if (this.limit >= this.capacity) return;
    const now = this.clock.now();
    while (this.limit < this.capacity && now - this.lastLimitChange >= RECOVERY_MS) {
      this.limit = Math.min(this.capacity, this.limit * 2);
      this.lastLimitChange += RECOVERY_MS;
    }
  }

  private take(turn: GateTurn): void {
    if (turn === 'escalated') this.alone = true;
    else this.shared++;
  }

  private wait(turn: GateTurn): Promise<void> {
    const since = this.clock.now();
    const queue = turn === 'escalated' ? this.escalatedWaiters : this.sharedWaiters;
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        queue.splice(queue.indexOf(waiter), 1);
        this.dispatch(); // an escalated waiter that gives up may let shared ones in
        reject(new ContentionTimeoutError(this.timeoutMs));
      }, this.timeoutMs);
      timer.unref();
      const waiter: Waiter = {
        turn,
        since,
        grant: () => {
          clearTimeout(timer);
          resolve();
        },
      };
      queue.push(waiter);
    });
  }

  /** The ordinary attempts that waited through an escalated turn go in before the next one. */
  private admitWaitingShared(): void {
    if (this.sharedWaiters.length > 0) this.recover();
    while (this.sharedWaiters.length > 0 && this.shared < this.limit) this.grant(this.sharedWaiters.shift()!);
  }

  /** Grants waiting turns: an escalated one once nothing is in flight, else ordinary ones while none is escalated. */
  private dispatch(): void {
    if (this.alone) return;
    if (this.escalatedWaiters.length > 0) {
      if (this.shared === 0) this.grant(this.escalatedWaiters.shift()!);
      return;
    }
    this.admitWaitingShared();
  }

  private grant(waiter: Waiter): void {
    this.take(waiter.turn);
    const waited = this.clock.now() - waiter.since;
    this.stats.gateWaits++;
    this.stats.gateWaitMs += waited;
    if (waited > this.stats.longestGateWaitMs) this.stats.longestGateWaitMs = waited;
    waiter.grant();
  }
}
