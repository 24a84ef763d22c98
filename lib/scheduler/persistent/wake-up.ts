/**
 * Wake-ups across processes: a commit that scheduled jobs tells the workers of
 * other processes that serve their queues to claim at once, not at their next
 * poll. PostgreSQL carries them itself: the scheduling transaction sends a
 * NOTIFY, delivered when (and only if) it commits, to the one LISTEN connection
 * of each process with workers. MySQL has no NOTIFY: each process with workers
 * receives datagrams on a UDP socket whose address its workers announce in the
 * registry, and a committing process sends one to each live worker's address
 * that serves a committed queue. Either way a wake-up only saves waiting: a lost
 * one (a dropped datagram, a LISTEN connection down) leaves the job to the next
 * poll, and a stray one costs an empty claim, never a wrong one.
 */
import { createSocket, type Socket, type SocketType } from 'node:dgram';
import { isIP } from 'node:net';
import type { Knex } from 'knex';
import type { Clock, CommitNotifications, Logger, WakeUpOptions } from '../../interfaces.js';
import { closeRawConnection, openRawConnection, queryOn } from '../../transactions/knex-internals.js';
import { within } from '../../support/deadline.js';
import { integerIn } from '../../support/validate.js';
import { LiveWorkers } from './live-workers.js';
import type { TableNames } from './schema.js';

/** Wakes this process's workers that serve `queue`, or all of them (undefined: wake-ups may have been missed). */
export type WakeWorkers = (queue?: string) => void;

export interface WakeUpChannel {
  /** Runs in the scheduling transaction, after its inserts: makes its commit, and only its commit, wake `queues` elsewhere. */
  beforeCommit(db: Knex | Knex.Transaction, queues: readonly string[]): Promise<void>;
  /** Runs once that transaction committed; never throws. */
  afterCommit(queues: readonly string[]): void;
  /** Starts receiving wake-ups (this process's first worker started); resolves to the address its workers announce, if any. */
  open(): Promise<string | null>;
  /** Stops receiving them (this process's last worker stopped). */
  close(): Promise<void>;
}

/** What a channel needs of its scheduler. */
export interface WakeUpHost {
  knex: Knex;
  tables: TableNames;
  clock: Clock;
  logger: Logger;
  wake: WakeWorkers;
  /** Whether worker `id` is one of this scheduler's, woken in-process after its commits. */
  isLocalWorker(id: string): boolean;
}

/** The channel for `knex`'s database: NOTIFY where it has it, else datagrams, none with a single writer or `wakeUp: false`. */
export function wakeUpChannel(
  host: WakeUpHost,
  database: { notifications: CommitNotifications | undefined; singleWriter: boolean },
  options: WakeUpOptions | false | undefined,
): WakeUpChannel {
  const datagrams = checkWakeUpOptions(options);
  if (!datagrams || database.singleWriter) return noWakeUps;
  if (database.notifications) return new NotifyWakeUps(host, database.notifications);
  return new DatagramWakeUps(host, datagrams);
}

/** The `wakeUp` option, checked where it enters; false when there are no wake-ups across processes. */
function checkWakeUpOptions(options: WakeUpOptions | false | undefined): Required<WakeUpOptions> | false {
  if (options === false) return false;
  if (options !== undefined && (typeof options !== 'object' || options === null)) {
    throw new TypeError(`wakeUp is { address?, port? } or false, got ${JSON.stringify(options)}`);
  }
  const address = options?.address ?? '127.0.0.1';
  if (typeof address !== 'string' || isIP(address) === 0) throw new TypeError(`wakeUp.address must be an IPv4 or IPv6 address, got ${JSON.stringify(address)}`);
  if (address === '0.0.0.0' || address === '::') {
    throw new TypeError(`wakeUp.address is announced to other processes, so it cannot be ${address}: give an address of this host that they reach`);
  }
  return { address, port: integerIn(options?.port ?? 0, 'wakeUp.port', 0, 65_535) };
}

const noWakeUps: WakeUpChannel = {
  beforeCommit: async () => undefined,
  afterCommit: () => undefined,
  open: async () => null,
  close: async () => undefined,
};

/** How long (ms) a LISTEN connection that broke, or could not be made, waits before the next try; doubled up to the last. */
const RECONNECT_MS = [1000, 30_000] as const;
/** How long (ms) stopping waits for a connection being made: one that hangs must not hold up the workers' stop. */
const STOP_WAIT_MS = 5000;

/** PostgreSQL: NOTIFY in the scheduling transaction; one LISTEN connection, outside the pool, per process with workers. */
class NotifyWakeUps implements WakeUpChannel {
  /** Table prefixes are letters, digits and _: the jobs table's name is a valid channel. */
  private readonly channel: string;
  private listening: { stop: AbortController; done: Promise<void> } | undefined;
  /** The ids of the live workers that serve each queue. */
  private readonly workers: LiveWorkers;

  constructor(
    private readonly host: WakeUpHost,
    private readonly notifications: CommitNotifications,
  ) {
    this.channel = host.tables.jobs;
    this.workers = new LiveWorkers(host, (row) => row.id);
  }

  async beforeCommit(db: Knex | Knex.Transaction, queues: readonly string[]): Promise<void> {
    // Only for queues a worker of another scheduler serves (this one's are woken in-process), as a
    // NOTIFY costs a statement and makes PostgreSQL serialise the commits of the transactions that send one.
    // The registry is read by the scheduling transaction itself (at most every few seconds): on another connection of the
    // pool it could wait for one that transactions like this one hold. When it cannot be read, every queue is notified.
    const served = await this.workers.byQueue(db);
    for (const queue of queues) {
      if (!served || (served.get(queue) ?? []).some((id) => !this.host.isLocalWorker(id))) await db.raw(this.notifications.notifySql, [this.channel, queue]);
    }
  }

  afterCommit(): void {} // the database delivers what the transaction sent

  async open(): Promise<null> {
    if (!this.listening) {
      const stop = new AbortController();
      this.listening = { stop, done: this.listen(stop.signal) };
    }
    return null; // nothing to announce: notifications find the connection
  }

  async close(): Promise<void> {
    const listening = this.listening;
    this.listening = undefined;
    if (!listening) return;
    listening.stop.abort();
    await within(listening.done, STOP_WAIT_MS, this.host.clock);
  }

  /** Listens until `stop`, connecting again after a pause whenever the connection breaks or cannot be made. */
  private async listen(stop: AbortSignal): Promise<void> {
    const { knex, logger, clock } = this.host;
    let pause: number = RECONNECT_MS[0];
    for (let attempt = 1; !stop.aborted; attempt++) {
      let connection: unknown;
      try {
        connection = await openRawConnection(knex);
        if (stop.aborted) return;
        const ended = new Promise<unknown>((resolve) => {
          this.notifications.subscribe(connection, (channel, payload) => channel === this.channel && this.host.wake(payload), resolve);
          stop.addEventListener('abort', () => resolve(undefined), { once: true });
        });
        await queryOn(knex, connection, this.notifications.listenSql(this.channel), []);
        if (attempt > 1) this.host.wake(); // notifications sent while no connection listened were lost
        pause = RECONNECT_MS[0];
        const err = await ended;
        if (stop.aborted) return;
        logger.warn({ err }, `the connection listening for wake-ups on ${this.channel} broke; workers poll until it is back`);
      } catch (err) {
        if (stop.aborted) return;
        logger.warn({ err }, `could not listen for wake-ups on ${this.channel}; workers poll meanwhile, and it tries again in ${pause} ms`);
      } finally {
        if (connection !== undefined) await closeRawConnection(knex, connection).catch(() => undefined); // broken already, or stopping
      }
      await clock.sleep(pause, stop).catch(() => undefined);
      pause = Math.min(pause * 2, RECONNECT_MS[1]);
    }
  }
}

/** A wake-up datagram: this mark, the jobs table's name (several schedulers may share a host), the queue. Nothing else. */
const DATAGRAM_MARK = 'aftercommit-wake';
/** Bytes a well-formed datagram takes at most (a table name of 45 characters, a queue name of 64 in UTF-8). */
const MAX_DATAGRAM_BYTES = 512;

/** MySQL: datagrams sent after the commit to the addresses that live workers serving the queue announce in the registry. */
class DatagramWakeUps implements WakeUpChannel {
  private receiving: Promise<{ socket: Socket; address: string } | null> | undefined;
  private readonly senders = new Map<SocketType, Socket>();
  /** The addresses live workers announce, by queue they serve. */
  private readonly addresses: LiveWorkers;
  /** The address this process's workers announce: the datagrams they would get are not sent, they were woken in-process. */
  private ownAddress: string | null = null;

  constructor(
    private readonly host: WakeUpHost,
    private readonly bind: Required<WakeUpOptions>,
  ) {
    this.addresses = new LiveWorkers(host, (row) => row.wake_address);
  }

  async beforeCommit(): Promise<void> {} // a datagram cannot wait for the commit: it is sent after it

  afterCommit(queues: readonly string[]): void {
    if (queues.length === 0) return;
    this.send(queues).catch((err: unknown) => this.host.logger.warn({ err }, 'sending wake-ups to other processes failed; their workers find the jobs when they poll'));
  }

  open(): Promise<string | null> {
    return (this.receiving ??= this.receive()).then((receiver) => receiver?.address ?? null);
  }

  async close(): Promise<void> {
    const receiving = this.receiving;
    this.receiving = undefined;
    const receiver = await receiving;
    if (!receiver) return;
    this.ownAddress = null;
    await new Promise<void>((resolve) => receiver.socket.close(() => resolve()));
  }

  /** Binds the socket this process's workers are woken on; null when it cannot be bound (they poll). */
  private async receive(): Promise<{ socket: Socket; address: string } | null> {
    const { address, port } = this.bind;
    const socket = createSocket(isIP(address) === 6 ? 'udp6' : 'udp4');
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('error', reject);
        socket.bind(port, address, () => {
          socket.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      socket.close();
      this.host.logger.warn(
        { err },
        `could not receive wake-ups on ${address} port ${port} (${(err as Error).message}); this process's workers find other processes' jobs by polling. ` +
          'Give wakeUp an address of this host and a free port',
      );
      return null;
    }
    socket.on('error', (err) => this.host.logger.warn({ err }, 'the socket receiving wake-ups failed; workers poll'));
    socket.on('message', (message) => this.received(message));
    socket.unref(); // the workers keep the process alive, not the socket
    this.ownAddress = formatAddress(address, socket.address().port);
    return { socket, address: this.ownAddress };
  }

  /** Wakes the workers of the datagram's queue; anything else that arrives on the port is ignored. */
  private received(message: Buffer): void {
    if (message.length > MAX_DATAGRAM_BYTES) return;
    const [mark, table, queue, ...rest] = message.toString('utf8').split('\n');
    if (mark !== DATAGRAM_MARK || table !== this.host.tables.jobs || !queue || rest.length > 0) return;
    this.host.wake(queue);
  }

  private async send(queues: readonly string[]): Promise<void> {
    const byQueue = (await this.addresses.byQueue()) ?? new Map<string, string[]>();
    const sent = new Set<string>();
    for (const queue of queues) {
      for (const target of byQueue.get(queue) ?? []) {
        if (target === this.ownAddress || sent.has(`${target}\n${queue}`)) continue;
        sent.add(`${target}\n${queue}`);
        const parsed = parseAddress(target);
        if (!parsed) continue; // a row written by something else: ignored like a stray datagram
        const message = Buffer.from(`${DATAGRAM_MARK}\n${this.host.tables.jobs}\n${queue}`);
        this.sender(parsed.family).send(message, parsed.port, parsed.host, (err) => {
          if (err) this.host.logger.debug({ err, target }, `could not send a wake-up to ${target}; its workers find the job when they poll`);
        });
      }
    }
  }

  private sender(family: SocketType): Socket {
    let socket = this.senders.get(family);
    if (!socket) {
      // Targets are addresses already (parseAddress), so the lookup answers at once and the datagram leaves within
      // send(); node's default lookup answers on a later tick, after the work the committer queued meanwhile.
      socket = createSocket({ type: family, lookup: (host, _family, found) => found(null, host, isIP(host)) });
      socket.on('error', (err) => this.host.logger.debug({ err }, 'the socket sending wake-ups failed'));
      socket.unref();
      this.senders.set(family, socket);
    }
    return socket;
  }
}

/** `host:port`, with an IPv6 host in brackets. */
function formatAddress(host: string, port: number): string {
  return isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
}

function parseAddress(address: string): { host: string; port: number; family: SocketType } | undefined {
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([0-9.]+)):(\d{1,5})$/.exec(address);
  if (!match) return undefined;
  const host = match[1] ?? match[2]!;
  const port = Number(match[3]);
  const version = isIP(host);
  if (version === 0 || port < 1 || port > 65_535) return undefined;
  return { host, port, family: version === 6 ? 'udp6' : 'udp4' };
}
