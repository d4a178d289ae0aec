/**
 * A short soak (`bench/soak.ts`): mixed streaming and non-streaming traffic
 * with client disconnects and an upstream restart, against a Butler child
 * process. Memory and open file descriptors stay flat, Butler keeps
 * answering, and nothing goes unhandled. The bounds are generous: this is a
 * leak detector, not a measurement (`deno run -A bench/soak.ts --seconds
 * 600` for a long one).
 */

import assert from "node:assert/strict";
import { runSoak } from "../bench/soak.ts";

Deno.test({
  name: "soak: memory and file descriptors stay flat; no unhandled errors",
  // Child processes and their pipes outlive the test's own bookkeeping.
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const report = await runSoak({ seconds: 15, workers: 12 });
    console.log(JSON.stringify(report));

    assert.ok(report.restarted, "the upstream was not restarted");
    assert.deepEqual(report.uncaught, []);
    const ok = report.outcomes.ok ?? 0;
    assert.ok(ok > 200, `only ${ok} requests succeeded`);
    // Requests fail only while the upstream is down, never for another
    // reason.
    assert.equal(report.outcomes.failed ?? 0, 0, JSON.stringify(report));

    const mb = 2 ** 20;
    assert.ok(
      report.rss.end <= report.rss.start * 1.5 + 40 * mb,
      `RSS grew from ${report.rss.start / mb} MB to ${report.rss.end / mb} MB`,
    );
    assert.ok(
      report.fds.end <= report.fds.start + 16,
      `open fds grew from ${report.fds.start} to ${report.fds.end}`,
    );
  },
});
