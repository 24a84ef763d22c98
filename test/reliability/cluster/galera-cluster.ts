/**
 * A private three-node MariaDB Galera cluster on loopback (own ports, own data directories under a
 * temporary directory), so a reliability test can crash and restart nodes without touching the shared
 * server. Needs Debian's galera-4 and rsync (the SST method), and root (the servers run as `mysql`).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, fstatSync, mkdirSync, mkdtempSync, openSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from '../private-mariadb.js';

const run = promisify(execFile);

const PROVIDER = '/usr/lib/galera/libgalera_smm.so';
const RSYNC = '/usr/bin/rsync';
/** How long any one wait (a node to start, sync, notice a crash, shut down) may take. */
const WAIT_MS = 120_000;

export interface GaleraNode {
  /** The node's position in the cluster: 0 bootstrapped it, 1 and 2 joined. */
  readonly index: 0 | 1 | 2;
  /** A knex/mysql2 connection URL: `mysql://root@127.0.0.1:PORT/test`. */
  readonly url: string;
  /** The node's MariaDB (SQL) port on 127.0.0.1. */
  readonly port: number;
}

export interface GaleraCluster {
  /** The three nodes, by index. */
  readonly nodes: readonly GaleraNode[];
  /** SIGKILLs node i's mariadbd (as a crash) and waits for the process to exit, and for the other two to report wsrep_cluster_size = 2. */
  kill(i: number): Promise<void>;
  /** Starts node i again (it rejoins by IST from the others) and waits until it is Synced and the cluster size is 3 again; returns how it rejoined: 'IST' or 'SST' read from its error log if possible. */
  restart(i: number): Promise<'IST' | 'SST' | 'unknown'>;
  /** wsrep_cluster_size as node i sees it. */
  size(i: number): Promise<number>;
  /** Stops all nodes (clean shutdown of those running, SIGKILL after a deadline) and removes the data directories. Safe to call after kill(). */
  destroy(): Promise<void>;
}

/** Whether this machine can run the cluster: the Galera provider and rsync are installed. */
export function galeraAvailable(): boolean {
  return existsSync(PROVIDER) && existsSync(RSYNC);
}

interface Node extends GaleraNode {
  readonly dir: string;
  readonly cnf: string;
  readonly socket: string;
  readonly log: string;
  process?: ChildProcess;
  /** Settles when the current process has exited (or failed to spawn). */
  exited?: Promise<void>;
  /** Why the current process could not be spawned, if it could not. */
  spawnError?: Error;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Distinct ports, each free now and below the ephemeral range. */
async function freePorts(count: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < count) ports.add(await freePort());
  return [...ports];
}

/** The last lines of a node's error log (what a failed wait shows). */
function logTail(node: Node, bytes = 4_000): string {
  try {
    const fd = openSync(node.log, 'r');
    try {
      const size = fstatSync(fd).size;
      const start = Math.max(0, size - bytes);
      const buffer = Buffer.alloc(size - start);
      readSync(fd, buffer, 0, buffer.length, start);
      const text = buffer.toString('utf8');
      // From the first whole line on.
      return start === 0 ? text : text.slice(text.indexOf('\n') + 1);
    } finally {
      closeSync(fd);
    }
  } catch (error) {
    return `(no error log: ${(error as Error).message})`;
  }
}

/** The error log from byte `from` on (what a restart wrote). */
function logSince(node: Node, from: number): string {
  try {
    const fd = openSync(node.log, 'r');
    try {
      const size = fstatSync(fd).size;
      const buffer = Buffer.alloc(Math.max(0, size - from));
      readSync(fd, buffer, 0, buffer.length, from);
      return buffer.toString('utf8');
    } finally {
      closeSync(fd);
    }
  } catch {
    return '';
  }
}

function logSize(node: Node): number {
  try {
    const fd = openSync(node.log, 'r');
    try {
      return fstatSync(fd).size;
    } finally {
      closeSync(fd);
    }
  } catch {
    return 0;
  }
}

/** How the node's process ended, if it has (by an exit code or a signal). */
function exitedEarly(node: Node): string | undefined {
  const p = node.process;
  if (!p) return 'not started';
  if (node.spawnError) return `mariadbd could not be started: ${node.spawnError.message}`;
  return p.exitCode !== null || p.signalCode !== null ? `mariadbd exited: ${p.exitCode ?? p.signalCode}` : undefined;
}

const running = (node: Node) => exitedEarly(node) === undefined;

/** A status variable as the node reports it, over its socket. */
async function status(node: Node, name: string): Promise<string> {
  const { stdout } = await run(
    'mariadb',
    ['--no-defaults', `--socket=${node.socket}`, '-uroot', '--connect-timeout=5', '-N', '-B', '-e', `SHOW GLOBAL STATUS LIKE '${name}'`],
    { timeout: 15_000 },
  );
  const value = stdout.trim().split('\t')[1];
  if (value === undefined) throw new Error(`node${node.index + 1} has no status variable ${name}`);
  return value;
}

async function sql(node: Node, statements: string): Promise<void> {
  await run('mariadb', ['--no-defaults', `--socket=${node.socket}`, '-uroot', '--connect-timeout=5', '-e', statements], { timeout: 60_000 });
}

/**
 * Waits, up to a deadline, until `check` holds; fails fast (with the tail of its error log) when a node
 * in `watched` dies meanwhile.
 */
async function waitFor(what: string, watched: Node[], check: () => Promise<boolean>): Promise<void> {
  // A deadline, not a count of tries: on a busy machine each try of the client takes longer.
  const deadline = Date.now() + WAIT_MS;
  let last: unknown;
  for (;;) {
    const dead = watched.find((n) => !running(n));
    if (dead) throw new Error(`${what}: node${dead.index + 1} ${exitedEarly(dead)}; its error log ends:\n${logTail(dead)}`);
    try {
      if (await check()) return;
      last = undefined;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) {
      const tails = watched.map((n) => `--- node${n.index + 1} error log ---\n${logTail(n, 2_000)}`).join('\n');
      throw new Error(`${what}: not within ${WAIT_MS / 1000} s${last ? ` (last error: ${(last as Error).message})` : ''}\n${tails}`);
    }
    await sleep(250);
  }
}

/** Starts a cluster of three nodes (node 0 bootstraps it, then 1 and 2 join one after the other) and waits until all are Synced. */
export async function galeraCluster(): Promise<GaleraCluster> {
  // Per node: its SQL port, its group communication (gmcast) port, its IST port and its SST (rsync) port.
  const free = await freePorts(12);
  const [ports, gmcast, ist, sst] = [free.slice(0, 3), free.slice(3, 6), free.slice(6, 9), free.slice(9, 12)] as [number[], number[], number[], number[]];
  const root = mkdtempSync(join(tmpdir(), 'aftercommit-galera-'));
  const name = `aftercommit-test-${randomBytes(4).toString('hex')}`;
  const address = `gcomm://${gmcast.map((g) => `127.0.0.1:${g}`).join(',')}`;

  const nodes: Node[] = ([0, 1, 2] as const).map((index) => {
    const dir = join(root, `node${index + 1}`);
    const port = ports[index]!;
    return { index, port, url: `mysql://root@127.0.0.1:${port}/test`, dir, cnf: join(dir, 'my.cnf'), socket: join(dir, 'mysqld.sock'), log: join(dir, 'error.log') };
  });
  for (const node of nodes) {
    mkdirSync(join(node.dir, 'tmp'), { recursive: true });
    const i = node.index;
    const options = [
      `gmcast.listen_addr=tcp://127.0.0.1:${gmcast[i]}`,
      `ist.recv_addr=127.0.0.1:${ist[i]}`,
      'gcache.size=64M',
      // Short timeouts, so a killed node is noticed (and dropped from the view) fast.
      'evs.suspect_timeout=PT3S',
      'evs.inactive_timeout=PT6S',
      'evs.install_timeout=PT4S',
    ].join(';');
    writeFileSync(
      node.cnf,
      [
        '[mysqld]',
        `datadir=${join(node.dir, 'data')}`,
        `socket=${node.socket}`,
        `port=${node.port}`,
        'bind-address=127.0.0.1',
        `pid-file=${join(node.dir, 'mysqld.pid')}`,
        `log-error=${node.log}`,
        // Its own temporary directory too: nothing shared with the other nodes or other servers.
        `tmpdir=${join(node.dir, 'tmp')}`,
        'user=mysql',
        'skip-name-resolve',
        'binlog-format=ROW',
        'default-storage-engine=InnoDB',
        'innodb-autoinc-lock-mode=2',
        'innodb-buffer-pool-size=64M',
        'innodb-log-file-size=48M',
        'wsrep-on=ON',
        `wsrep-provider=${PROVIDER}`,
        `wsrep-cluster-name=${name}`,
        `wsrep-cluster-address=${address}`,
        `wsrep-node-address=127.0.0.1:${gmcast[i]}`,
        `wsrep-node-name=node${i + 1}`,
        `wsrep-provider-options="${options}"`,
        'wsrep-sst-method=rsync',
        `wsrep-sst-receive-address=127.0.0.1:${sst[i]}`,
        'wsrep-slave-threads=2',
        '',
      ].join('\n'),
    );
  }

  const start = (node: Node, bootstrap: boolean, extra: string[] = []) => {
    const args = [`--defaults-file=${node.cnf}`, ...(bootstrap ? ['--wsrep-new-cluster'] : []), ...extra];
    const child = spawn('/usr/sbin/mariadbd', args, { stdio: 'ignore', detached: false });
    node.process = child;
    node.spawnError = undefined;
    node.exited = new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      // A failed spawn (no mariadbd) sets neither exitCode nor signalCode: note it as an exit.
      child.once('error', (error) => {
        node.spawnError = error;
        resolve();
      });
    });
  };

  /** The nodes now running. */
  const up = () => nodes.filter(running);

  /** Waits until `node` is Synced and every running node sees the running ones as the cluster. */
  const waitSynced = (node: Node, what: string) =>
    waitFor(what, up(), async () => {
      const members = up();
      if (!members.includes(node)) return false;
      if ((await status(node, 'wsrep_local_state_comment')) !== 'Synced') return false;
      for (const member of members) if (Number(await status(member, 'wsrep_cluster_size')) !== members.length) return false;
      return true;
    });

  const nodeAt = (i: number): Node => {
    const node = nodes[i];
    if (!node) throw new Error(`no node ${i} (the cluster has nodes 0, 1 and 2)`);
    return node;
  };

  let destroyed: Promise<void> | undefined;
  const destroy = () =>
    (destroyed ??= (async () => {
      // Clean shutdown, last joiner first; SIGKILL whatever does not stop by the deadline.
      for (const node of [...nodes].reverse()) {
        if (!node.process || !running(node)) continue;
        const exited = node.exited!;
        await run('mariadb-admin', ['--no-defaults', `--socket=${node.socket}`, '-uroot', '--connect-timeout=5', 'shutdown'], { timeout: 30_000 }).catch(() =>
          node.process!.kill('SIGTERM'),
        );
        let timer: NodeJS.Timeout | undefined;
        const late = await Promise.race([exited.then(() => false), new Promise<boolean>((r) => (timer = setTimeout(() => r(true), 60_000)))]);
        clearTimeout(timer);
        if (late) {
          node.process.kill('SIGKILL');
          await exited;
        }
      }
      rmSync(root, { recursive: true, force: true });
    })());

  try {
    // The servers run as mysql (rsync SST fails as root), so everything under the temp dir is theirs.
    await run('chmod', ['755', root]);
    await run('chown', ['-R', 'mysql:mysql', root]);
    // All settled before failing, so none is still writing into the directory destroy() removes.
    const installs = await Promise.allSettled(
      nodes.map((node) =>
        run('mariadb-install-db', [`--defaults-file=${node.cnf}`, '--user=mysql', '--auth-root-authentication-method=normal', '--skip-test-db'], { timeout: WAIT_MS }),
      ),
    );
    for (const [i, install] of installs.entries()) {
      if (install.status === 'rejected') {
        throw new Error(`mariadb-install-db for node${i + 1} failed: ${(install.reason as Error).message}\nits error log ends:\n${logTail(nodes[i]!)}`);
      }
    }
    await run('chown', ['-R', 'mysql:mysql', root]);

    start(nodes[0]!, true);
    await waitSynced(nodes[0]!, 'node1 bootstrapping the cluster');
    for (const node of nodes.slice(1)) {
      start(node, false);
      await waitSynced(node, `node${node.index + 1} joining the cluster`);
    }
    await sql(
      nodes[0]!,
      "CREATE DATABASE IF NOT EXISTS test; CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY ''; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;",
    );
  } catch (error) {
    await destroy().catch(() => {});
    throw error;
  }

  const cluster: GaleraCluster = {
    nodes: nodes.map(({ index, url, port }) => ({ index, url, port })),
    async kill(i) {
      const node = nodeAt(i);
      if (!node.process || !running(node)) throw new Error(`node${i + 1} is not running`);
      node.process.kill('SIGKILL');
      await node.exited;
      const others = up();
      await waitFor(`the others noticing node${i + 1} crashed`, others, async () => {
        for (const other of others) if (Number(await status(other, 'wsrep_cluster_size')) !== others.length) return false;
        return true;
      });
    },
    async restart(i) {
      const node = nodeAt(i);
      if (node.process && running(node)) throw new Error(`node${i + 1} is still running`);
      // After a crash grastate.dat says seqno -1, and mariadbd started directly (not through
      // galera_recovery) would ask for a full SST: recover the position from InnoDB first, as
      // galera_recovery does, and start from it, so the node can rejoin by IST.
      const recovered = await run('/usr/sbin/mariadbd', [`--defaults-file=${node.cnf}`, '--wsrep-recover', '--disable-log-error'], { timeout: WAIT_MS }).then(
        ({ stdout, stderr }) => `${stdout}${stderr}`,
        (error: { stdout?: string; stderr?: string; message: string }) => {
          throw new Error(`node${i + 1}: mariadbd --wsrep-recover failed: ${error.message}\n${error.stderr ?? ''}`);
        },
      );
      const position = /WSREP: Recovered position: *(\S+)/.exec(recovered)?.[1];
      if (!position) throw new Error(`node${i + 1}: mariadbd --wsrep-recover printed no position:\n${recovered.slice(-4_000)}`);
      const from = logSize(node);
      start(node, false, [`--wsrep-start-position=${position}`]);
      await waitSynced(node, `node${i + 1} rejoining the cluster`);
      // "SST received" is logged for an IST too (the rsync script is bypassed): what tells them apart is
      // the script's own summary, and whether Galera asked for everything (an IST from the zero UUID).
      const log = logSince(node, from);
      if (/rsync SST completed on joiner|IST uuid:0{8}-/.test(log)) return 'SST';
      if (/rsync IST completed on joiner|Receiving IST: \d+ writesets/.test(log)) return 'IST';
      return 'unknown';
    },
    async size(i) {
      return Number(await status(nodeAt(i), 'wsrep_cluster_size'));
    },
    destroy,
  };
  return cluster;
}
