// The test command (`npm test`, i.e. `node --import tsx test/run.ts`): type-checks, checks that no module imports
// itself through others (type-only imports included), probes the database servers, then runs every test file with
// node's test runner. Server suites are skipped with a notice when a server is down, and are required (a failure)
// when CI=true or AFTERCOMMIT_REQUIRE_SERVERS=1. --no-typecheck skips both static checks.
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { servers, probe } from './support/servers.js';

const required = process.env.CI === 'true' || process.env.AFTERCOMMIT_REQUIRE_SERVERS === '1';
const args = process.argv.slice(2);

if (!args.includes('--no-typecheck')) {
  const tsc = spawnSync('npx', ['--no-install', 'tsc', '--noEmit', '-p', '.'], { stdio: 'inherit' });
  if (tsc.status !== 0) process.exit(tsc.status ?? 1);
  const circles = spawnSync('npm', ['run', '--silent', 'check:circles'], { stdio: 'inherit' });
  if (circles.status !== 0) process.exit(circles.status ?? 1);
}

const available: string[] = [];
for (const server of servers) {
  const error = await probe(server);
  if (!error) {
    available.push(server.name);
  } else if (required) {
    console.error(`${server.label} is required (CI=true) but not reachable at ${server.url}: ${error}`);
    process.exit(1);
  } else {
    console.warn(`! ${server.label} not reachable at ${server.url} (${error}): its suites are skipped`);
  }
}

function testFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return name === 'support' ? [] : testFiles(path);
    return name.endsWith('.test.ts') ? [path] : [];
  });
}

// The reliability suite (test/reliability: chaos, restarts, a soak) runs on its own, one file at a time.
const reliability = args.includes('--reliability');
const filters = args.filter((a) => !a.startsWith('--'));
const files = testFiles('test')
  .filter((f) => f.startsWith(join('test', 'reliability')) === reliability)
  .filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)));
const result = spawnSync(
  process.execPath,
  [
    '--import',
    'tsx',
    ...(reliability ? ['--expose-gc'] : []),
    '--test',
    `--test-concurrency=${reliability ? 1 : 3}`,
    `--test-timeout=${reliability ? 900_000 : 120_000}`,
    '--test-reporter=spec',
    ...files,
  ],
  {
    stdio: 'inherit',
    env: { ...process.env, NODE_ENV: 'test', AFTERCOMMIT_TEST_SERVERS: available.join(',') },
  },
);
process.exit(result.status ?? 1);
