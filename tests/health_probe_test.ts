/** `/healthz` probes: callers at the same moment share one upstream probe. */

import assert from "node:assert/strict";
import { coalescedProbe } from "../src/observe/health.ts";

Deno.test("concurrent callers share one probe; the next call probes again", async () => {
  let probes = 0;
  let answer = true;
  let release!: () => void;
  const probe = coalescedProbe(async () => {
    probes++;
    await new Promise<void>((resolve) => release = resolve);
    return answer;
  });
  const upstream = new URL("http://127.0.0.1:11434");
  const together = Array.from({ length: 50 }, () => probe(upstream));
  assert.equal(probes, 1);
  release();
  assert.deepEqual(new Set(await Promise.all(together)), new Set([true]));

  // Finished probes are not reused: a later caller sees a fresh answer.
  answer = false;
  const later = probe(upstream);
  assert.equal(probes, 2);
  release();
  assert.equal(await later, false);
});

Deno.test("different upstreams are probed separately", async () => {
  const seen: string[] = [];
  const probe = coalescedProbe((upstream) => {
    seen.push(upstream.origin);
    return Promise.resolve(true);
  });
  await Promise.all([
    probe(new URL("http://127.0.0.1:1")),
    probe(new URL("http://127.0.0.1:2")),
  ]);
  assert.deepEqual(seen.sort(), ["http://127.0.0.1:1", "http://127.0.0.1:2"]);
});
