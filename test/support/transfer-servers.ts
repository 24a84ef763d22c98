/** Transfer server processes (test/fixtures/transfer-server.ts), started and stopped for the crowd tests. */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';

const START_TIMEOUT_MS = 30_000;

export interface ServerProcess {
  child: ChildProcess;
  url: string;
}

/** Starts one transfer server process; resolves once it prints `listening <port>`. */
export async function startServer(env: Record<string, string>): Promise<ServerProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/transfer-server.ts'], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let timer: NodeJS.Timeout | undefined;
  try {
    const url = await new Promise<string>((resolve, reject) => {
      createInterface({ input: child.stdout! }).on('line', (line) => {
        const match = /^listening (\d+)$/.exec(line);
        if (match) resolve(`http://127.0.0.1:${match[1]}`);
      });
      child.once('exit', (code, signal) => reject(new Error(`the transfer server exited before listening (${signal ?? code})`)));
      timer = setTimeout(() => reject(new Error('the transfer server did not start in time')), START_TIMEOUT_MS);
    });
    return { child, url };
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/** SIGTERM (the server destroys its knex), then SIGKILL if it has not exited within 5 s. */
export async function stopServer({ child }: ServerProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

/** e.g. `200:56 503:4` */
export function tally(statuses: number[]): string {
  const counts = new Map<number, number>();
  for (const s of [...statuses].sort((a, b) => a - b)) counts.set(s, (counts.get(s) ?? 0) + 1);
  return [...counts].map(([status, n]) => `${status}:${n}`).join(' ');
}

export interface Transfer {
  from: 1 | 2;
  to: 1 | 2;
  amount: number;
}

/** `n` transfers between rows 1 and 2; transfer i moves i + 1: even ones from row 1 to row 2, odd ones back, so half take the locks in each order. */
export function oppositeTransfers(n: number): Transfer[] {
  return Array.from({ length: n }, (_, i) => ({ from: i % 2 === 0 ? 1 : 2, to: i % 2 === 0 ? 2 : 1, amount: i + 1 }));
}

/** The balances of rows 1 and 2, both `balance` at first, once `done` transfers have been applied. */
export function balancesAfterTransfers(done: readonly Transfer[], balance: number): [number, number] {
  const moved = done.reduce((sum, t) => sum + (t.from === 1 ? t.amount : -t.amount), 0);
  return [balance - moved, balance + moved];
}
