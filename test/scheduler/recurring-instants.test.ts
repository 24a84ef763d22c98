/**
 * The instants of recurring jobs, without a database: cron patterns read in a
 * time zone across daylight-saving changes (Europe/Berlin, spring and autumn
 * 2026), and what a tick fires of the due instants with `missed: 'skip'` and
 * `'once'`.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { CronSchedule, dueRuns, type MissedPolicy } from '../../lib/scheduler/persistent/recurring.js';

const at = (iso: string) => Date.parse(iso);
const iso = (ms: number) => new Date(ms).toISOString().replace('.000Z', 'Z');
/** The local wall-clock time of `ms` in `timeZone`, as `YYYY-MM-DD HH:MM:SS`. */
const local = (ms: number, timeZone: string) => new Date(ms).toLocaleString('sv-SE', { timeZone });

/** Every instant of `schedule` in (from, to]: a tick at `to` with nothing missed. */
function instants(schedule: CronSchedule, from: string, to: string): number[] {
  const due = dueRuns(schedule, { last: at(from), now: at(to), missed: 'skip', missedAfter: at(to) - at(from) + 1 });
  assert.equal(due.missed, false);
  return due.runs.map((run) => run.at);
}

describe('recurring instants across daylight-saving changes (Europe/Berlin)', () => {
  const berlin = 'Europe/Berlin';

  it('09:00 every day stays at 09:00 local time when the clocks go forward and back', () => {
    const nine = new CronSchedule('0 9 * * *', berlin);
    const spring = instants(nine, '2026-03-27T12:00:00Z', '2026-03-31T12:00:00Z');
    assert.deepEqual(spring.map(iso), ['2026-03-28T08:00:00Z', '2026-03-29T07:00:00Z', '2026-03-30T07:00:00Z', '2026-03-31T07:00:00Z']);
    const autumn = instants(nine, '2026-10-23T12:00:00Z', '2026-10-27T12:00:00Z');
    assert.deepEqual(autumn.map(iso), ['2026-10-24T07:00:00Z', '2026-10-25T08:00:00Z', '2026-10-26T08:00:00Z', '2026-10-27T08:00:00Z']);
    for (const instant of [...spring, ...autumn]) assert.match(local(instant, berlin), / 09:00:00$/);
  });

  it('a local time the spring change skips (02:30 on 29 March) fires once that day, an hour on: 03:30 CEST', () => {
    const runs = instants(new CronSchedule('30 2 * * *', berlin), '2026-03-28T00:00:00Z', '2026-03-30T12:00:00Z');
    assert.deepEqual(runs.map(iso), ['2026-03-28T01:30:00Z', '2026-03-29T01:30:00Z', '2026-03-30T00:30:00Z']);
    assert.deepEqual(runs.map((r) => local(r, berlin)), ['2026-03-28 02:30:00', '2026-03-29 03:30:00', '2026-03-30 02:30:00']);
  });

  it('a local time the autumn change repeats (02:30 on 25 October) fires once, at its second occurrence (CET)', () => {
    const runs = instants(new CronSchedule('30 2 * * *', berlin), '2026-10-24T00:00:00Z', '2026-10-26T12:00:00Z');
    assert.deepEqual(runs.map(iso), ['2026-10-24T00:30:00Z', '2026-10-25T01:30:00Z', '2026-10-26T01:30:00Z']);
    assert.deepEqual(runs.map((r) => local(r, berlin)), ['2026-10-24 02:30:00', '2026-10-25 02:30:00', '2026-10-26 02:30:00']);
  });

  it('every hour: each local hour of the short and the long day fires once', () => {
    const hourly = new CronSchedule('0 * * * *', berlin);
    const hoursOf = (runs: number[]) => runs.map((r) => local(r, berlin).slice(11, 13));
    const spring = instants(hourly, '2026-03-28T23:00:00Z', '2026-03-29T22:00:00Z'); // 00:00 to 00:00 local, 23 hours long
    assert.deepEqual(hoursOf(spring), ['01', ...Array.from({ length: 21 }, (_, i) => String(i + 3).padStart(2, '0')), '00']);
    const autumn = instants(hourly, '2026-10-24T22:00:00Z', '2026-10-25T23:00:00Z'); // 25 hours long
    assert.deepEqual(hoursOf(autumn), [...Array.from({ length: 23 }, (_, i) => String(i + 1).padStart(2, '0')), '00']);
    assert.equal(new Set(autumn).size, autumn.length);
  });

  it('the same pattern in UTC (the default zone) ignores the change, and New York changes on another day', () => {
    assert.deepEqual(instants(new CronSchedule('0 9 * * *'), '2026-03-28T12:00:00Z', '2026-03-30T12:00:00Z').map(iso), ['2026-03-29T09:00:00Z', '2026-03-30T09:00:00Z']);
    const ny = instants(new CronSchedule('0 9 * * *', 'America/New_York'), '2026-03-07T15:00:00Z', '2026-03-09T18:00:00Z');
    assert.deepEqual(ny.map(iso), ['2026-03-08T13:00:00Z', '2026-03-09T13:00:00Z']);
  });

  it('every 15 s through the repeated hour: its local times fire once, in the second pass (CET); the first pass (CEST) has none', () => {
    const runs = instants(new CronSchedule('*/15 * * * * *', berlin), '2026-10-24T23:59:00Z', '2026-10-25T01:01:00Z');
    assert.deepEqual(
      runs.map((r) => `${iso(r)} ${local(r, berlin).slice(11)}`),
      [
        '2026-10-24T23:59:15Z 01:59:15',
        '2026-10-24T23:59:30Z 01:59:30',
        '2026-10-24T23:59:45Z 01:59:45',
        '2026-10-25T01:00:00Z 02:00:00',
        '2026-10-25T01:00:15Z 02:00:15',
        '2026-10-25T01:00:30Z 02:00:30',
        '2026-10-25T01:00:45Z 02:00:45',
        '2026-10-25T01:01:00Z 02:01:00',
      ],
    );
  });
});

describe('which due instants a tick fires', () => {
  const minutely = new CronSchedule('0 * * * * *');
  const t0 = at('2026-05-04T10:00:00Z');
  const tick = (now: number, missed: MissedPolicy, last = t0, missedAfter = 60_000) => {
    const due = dueRuns(minutely, { last, now, missed, missedAfter });
    return { runs: due.runs.map((r) => [iso(r.at), r.catchUp]), last: iso(due.last), missed: due.missed };
  };

  it('nothing before the next instant; an instant on time fires once, and `last` moves to it', () => {
    assert.deepEqual(tick(t0 + 30_000, 'once'), { runs: [], last: '2026-05-04T10:00:00Z', missed: false });
    assert.deepEqual(tick(t0 + 61_000, 'skip'), { runs: [['2026-05-04T10:01:00Z', false]], last: '2026-05-04T10:01:00Z', missed: false });
    assert.deepEqual(tick(t0 + 61_000, 'once', t0 + 60_000).runs, [], 'an instant already fired does not fire again');
  });

  it('instants up to missedAfter late are on time and each fires; one exactly that late too', () => {
    const late = tick(t0 + 150_000, 'skip'); // 10:01 is 90 s late: missed; 10:02 is 30 s late
    assert.deepEqual(late.runs, [['2026-05-04T10:02:00Z', false]]);
    assert.deepEqual(tick(t0 + 120_000, 'skip').runs, [['2026-05-04T10:01:00Z', false], ['2026-05-04T10:02:00Z', false]], '10:01 is exactly 60 s late');
  });

  it("after 10 minutes with no worker: 'skip' fires only what is on time, 'once' adds one catch-up run for the latest missed instant", () => {
    const now = t0 + 10 * 60_000 + 30_000; // 10:10:30
    assert.deepEqual(tick(now, 'skip'), { runs: [['2026-05-04T10:10:00Z', false]], last: '2026-05-04T10:10:00Z', missed: true });
    assert.deepEqual(tick(now, 'once'), {
      runs: [['2026-05-04T10:09:00Z', true], ['2026-05-04T10:10:00Z', false]],
      last: '2026-05-04T10:10:00Z',
      missed: true,
    });
  });

  it("a daily job missed for three days: 'once' runs it once, for the latest instant; 'skip' not at all; both move `last` past them", () => {
    const daily = new CronSchedule('0 3 * * *');
    const last = at('2026-05-01T03:00:00Z');
    const now = at('2026-05-04T12:00:00Z');
    const once = dueRuns(daily, { last, now, missed: 'once', missedAfter: 60_000 });
    assert.deepEqual(once.runs.map((r) => [iso(r.at), r.catchUp]), [['2026-05-04T03:00:00Z', true]]);
    const skip = dueRuns(daily, { last, now, missed: 'skip', missedAfter: 60_000 });
    assert.deepEqual(skip.runs, []);
    assert.equal(iso(once.last), '2026-05-04T03:00:00Z');
    assert.equal(iso(skip.last), '2026-05-04T03:00:00Z');
    assert.deepEqual(dueRuns(daily, { last: skip.last, now, missed: 'once', missedAfter: 60_000 }).runs, [], 'decided once: nothing fires again');
  });

  it('every second, missed for 30 days: one catch-up run and the on-time instants, without walking every missed second', () => {
    const everySecond = new CronSchedule('* * * * * *');
    const now = at('2026-06-03T10:00:00.250Z');
    let calls = 0;
    const counted = { next: (after: number) => (calls++, everySecond.next(after)) };
    const due = dueRuns(counted, { last: now - 30 * 86_400_000, now, missed: 'once', missedAfter: 5000 });
    assert.deepEqual(
      due.runs.map((r) => [iso(r.at), r.catchUp]),
      [['2026-06-03T09:59:55Z', true], ...[56, 57, 58, 59].map((s) => [`2026-06-03T09:59:${s}Z`, false]), ['2026-06-03T10:00:00Z', false]],
    );
    assert.ok(calls < 200, `${calls} steps`);
  });

  it('a `last` ahead of this clock (another host’s clock runs fast) fires nothing', () => {
    assert.deepEqual(tick(t0, 'once', t0 + 120_000), { runs: [], last: '2026-05-04T10:02:00Z', missed: false });
  });
});
