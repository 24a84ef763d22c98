/** Where the CPU went, from Linux's /proc (the readers answer 0 or throw elsewhere; callers print '-'). */
import { readFileSync, readdirSync } from 'node:fs';

export const TICKS_PER_SECOND = 100; // USER_HZ, 100 on every mainstream Linux build

/** utime + stime of a process, in ticks; 0 once it is gone. */
export function processTicks(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return 0;
  }
}

/** Ticks of the processes whose name matches, summed (PostgreSQL's backends come and go: approximate). */
export function ticksOf(names: RegExp): number {
  let ticks = 0;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (names.test(readFileSync(`/proc/${entry}/comm`, 'utf8').trim())) ticks += processTicks(Number(entry));
    } catch {
      // exited meanwhile
    }
  }
  return ticks;
}

/** Busy and total ticks of the whole machine. */
export function machineTicks(): { busy: number; total: number } {
  const ticks = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = ticks.slice(0, 8).reduce((a, b) => a + b, 0); // user … steal (guest time is inside user)
  return { busy: total - ticks[3]! - ticks[4]!, total }; // minus idle and iowait
}
