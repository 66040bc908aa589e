import assert from "node:assert/strict";
import { test } from "node:test";
import { SCENARIOS, simulate } from "../bench/fleet.ts";

// The bench's fleet simulation (real handlers, simulated clock, faults injected in our layer) on smaller runs:
// the invariants only; the figures come from `npm run bench`.
const faulty = SCENARIOS.find((s) => s.jobs === 1000)!;

for (const seed of [1, 2, 3]) {
  test(`[injected faults: capacity, interruptions, GitHub 5xx/429, missed and doubled webhooks] 150 jobs into a cap of 6 (seed ${seed}): nothing lost, cap held, no duplicate, no orphan, every interruption re-run on-demand`, async () => {
    const r = await simulate({ ...faulty, name: "small", jobs: 150, maxRunners: 6, arrivalSpreadMin: 120, seed });
    assert.equal(r.lost, 0);
    assert.equal(r.served, 150);
    assert.ok(r.maxActive <= 6, `max active ${r.maxActive}`);
    assert.equal(r.duplicateLaunches, 0);
    assert.equal(r.orphans, 0);
    assert.ok(r.interruptions > 0, "the run exercises interruptions");
    assert.equal(r.reruns, r.interruptions);
    assert.equal(r.spotLaunchesForReruns, 0);
  });
}

test("jobs over GitHub's 24 h queue limit: the scaler serves exactly what an ideal scheduler could, loses none, holds the cap", async () => {
  const base = SCENARIOS.find((s) => s.jobs === 45 && s.maxRunners === 4)!;
  const r = await simulate({ ...base, jobs: 20, maxRunners: 2 });
  assert.equal(r.lost, 0);
  assert.equal(r.served, r.idealServed);
  assert.equal(r.served + r.cancelledByGitHub, 20);
  assert.ok(r.maxActive <= 2);
  assert.equal(r.orphans, 0);
});
