/**
 * The peer ranges admit no version with a published advisory: mysql2 before 3.9.8
 * (GHSA-pmh2-wpjm-fj45, prototype pollution, and the older RCE/poisoning ones),
 * koa 2 before 2.16.2 and koa 3 before 3.0.1 (GHSA-jgmv-j7ww-jx2x, open redirect;
 * 2.16.1 fixed an earlier one). And knex's admits only what the suites run on:
 * its lowest version (the devDependency `knex25`) and each major up to the top.
 */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const { peerDependencies } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
  peerDependencies: Record<string, string>;
};

/** The lowest version each `^x.y.z` alternative of `range` admits; other range forms are refused, so this test cannot be sidestepped. */
function floors(range: string): number[][] {
  return range.split('||').map((alternative) => {
    const match = /^\^(\d+)\.(\d+)\.(\d+)$/.exec(alternative.trim());
    assert.ok(match, `peer range ${JSON.stringify(range)}: write each alternative as ^major.minor.patch`);
    return match.slice(1).map(Number);
  });
}

const atLeast = (version: number[], patched: number[]) => {
  for (let i = 0; i < 3; i++) if (version[i] !== patched[i]) return version[i]! > patched[i]!;
  return true;
};

const patchedPerMajor: Record<string, Record<number, number[]>> = {
  mysql2: { 3: [3, 9, 8] },
  koa: { 2: [2, 16, 2], 3: [3, 0, 1] },
};

for (const [peer, patched] of Object.entries(patchedPerMajor)) {
  it(`${peer}: every version the peer range admits has the advisories' fixes`, () => {
    for (const floor of floors(peerDependencies[peer]!)) {
      const fixed = patched[floor[0]!];
      assert.ok(fixed, `${peer} ${floor.join('.')}: no known-safe version of major ${floor[0]}`);
      assert.ok(atLeast(floor, fixed), `${peer} ${floor.join('.')} is older than ${fixed.join('.')}`);
    }
  });
}

it('knex: the peer range starts at a version the suites run on, and each major it admits is tested', () => {
  const match = /^>=(\d+)\.(\d+) <(\d+)$/.exec(peerDependencies.knex!);
  assert.ok(match, `knex peer range ${JSON.stringify(peerDependencies.knex)}: write it as >=major.minor <major`);
  const [floorMajor, floorMinor, ceilingMajor] = match.slice(1).map(Number) as [number, number, number];
  const require = createRequire(import.meta.url);
  // The installed versions: knex 3 as itself, the range's floor as the alias the knex 2.5 suite imports.
  const tested = ['knex', 'knex25'].map((name) => (require(`${name}/package.json`) as { version: string }).version.split('.').map(Number));
  assert.ok(
    tested.some(([major, minor]) => major === floorMajor && minor === floorMinor),
    `knex ${floorMajor}.${floorMinor}, the peer range's floor, is not among the tested versions ${tested.map((v) => v.join('.')).join(', ')}`,
  );
  for (let major = floorMajor; major < ceilingMajor; major++) {
    assert.ok(tested.some(([testedMajor]) => testedMajor === major), `knex ${major} is admitted by the peer range but not tested`);
  }
});
