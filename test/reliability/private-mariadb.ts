/**
 * A MariaDB server of the test's own (own data directory, own port), so a test
 * can stop and restart it without touching the shared server.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { once } from 'node:events';

const run = promisify(execFile);

/**
 * A port that is free now and below the kernel's ephemeral range, so no process that binds port 0
 * (or connects out) takes it while the server is down for its restart.
 */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = 20_000 + Math.floor(Math.random() * 10_000);
    const server = createServer().listen(port, '127.0.0.1');
    // once() rejects on 'error': a port in use is simply skipped.
    const bound = await once(server, 'listening').then(
      () => true,
      () => false,
    );
    server.close();
    if (bound) return port;
  }
}

export interface PrivateMariaDB {
  readonly url: string;
  /** Starts the server and waits until it answers. */
  start(): Promise<void>;
  /** Shuts the server down (cleanly) and waits until it is gone. */
  stop(): Promise<void>;
  /** Stops it and removes its data. */
  destroy(): Promise<void>;
}

export async function privateMariaDB(): Promise<PrivateMariaDB> {
  const dir = mkdtempSync(join(tmpdir(), 'aftercommit-mariadb-'));
  const port = await freePort();
  await run('mariadb-install-db', ['--no-defaults', `--datadir=${dir}/data`, '--user=root', '--auth-root-authentication-method=normal', '--skip-test-db']);
  const admin = ['--protocol=tcp', '-h127.0.0.1', `-P${port}`, '-uroot'];
  let server: ChildProcess | undefined;

  /** How the server process ended, if it has (by an exit code or a signal). */
  const exitedEarly = () =>
    server && (server.exitCode !== null || server.signalCode !== null) ? ` (mariadbd exited: ${server.exitCode ?? server.signalCode})` : undefined;
  const db: PrivateMariaDB = {
    url: `mysql://root@127.0.0.1:${port}/test`,
    async start() {
      server = spawn(
        '/usr/sbin/mariadbd',
        ['--no-defaults', `--datadir=${dir}/data`, `--port=${port}`, '--bind-address=127.0.0.1', `--socket=${dir}/mysqld.sock`, '--user=root', '--skip-log-bin', '--innodb-buffer-pool-size=64M'],
        { stdio: 'ignore' },
      );
      // A deadline, not a count of tries: on a busy machine each try of the client takes longer.
      const deadline = Date.now() + 120_000;
      while (Date.now() < deadline && exitedEarly() === undefined) {
        try {
          await run('mariadb', [...admin, '-e', 'CREATE DATABASE IF NOT EXISTS test']);
          return;
        } catch {
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      throw new Error(`the private MariaDB on port ${port} did not start${exitedEarly() ?? ' within 120 s'}`);
    },
    async stop() {
      if (!server || exitedEarly() !== undefined) return;
      const exited = once(server, 'exit');
      await run('mariadb-admin', [...admin, 'shutdown']).catch(() => server!.kill('SIGKILL'));
      await exited;
    },
    async destroy() {
      await db.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return db;
}
