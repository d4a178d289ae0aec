import assert from "node:assert/strict";
import { ConcurrencyLimiter } from "../src/policy/concurrency.ts";

Deno.test("slots are taken up to the limit, then refused", () => {
  const limiter = new ConcurrencyLimiter();
  const checks = [{ key: "client:a", limit: 2 }];

  const first = limiter.tryAcquire(checks);
  const second = limiter.tryAcquire(checks);
  assert.ok(first && second);
  assert.equal(limiter.inFlight("client:a"), 2);
  assert.equal(limiter.tryAcquire(checks), undefined);

  first();
  assert.equal(limiter.inFlight("client:a"), 1);
  assert.ok(limiter.tryAcquire(checks));
});

Deno.test("acquiring is all or none across keys", () => {
  const limiter = new ConcurrencyLimiter();
  const holdGlobal = limiter.tryAcquire([{ key: "global", limit: 1 }]);
  assert.ok(holdGlobal);

  const refused = limiter.tryAcquire([
    { key: "client:a", limit: 5 },
    { key: "global", limit: 1 },
  ]);
  assert.equal(refused, undefined);
  assert.equal(limiter.inFlight("client:a"), 0, "client slot not taken");
  assert.equal(limiter.inFlight("global"), 1);

  holdGlobal();
  const both = limiter.tryAcquire([
    { key: "client:a", limit: 5 },
    { key: "global", limit: 1 },
  ]);
  assert.ok(both);
  assert.equal(limiter.inFlight("client:a"), 1);
  assert.equal(limiter.inFlight("global"), 1);
  both();
  assert.equal(limiter.inFlight("client:a"), 0);
  assert.equal(limiter.inFlight("global"), 0);
});

Deno.test("release is idempotent", () => {
  const limiter = new ConcurrencyLimiter();
  const checks = [{ key: "k", limit: 3 }];
  const a = limiter.tryAcquire(checks)!;
  const b = limiter.tryAcquire(checks)!;
  a();
  a();
  a();
  assert.equal(limiter.inFlight("k"), 1, "only a's slot came back");
  b();
  assert.equal(limiter.inFlight("k"), 0);
});

Deno.test("keys with nothing in flight are not stored", () => {
  const limiter = new ConcurrencyLimiter();
  const releases = [];
  for (let i = 0; i < 1000; i++) {
    releases.push(limiter.tryAcquire([{ key: `user:${i}`, limit: 1 }])!);
  }
  assert.equal(limiter.size, 1000);
  for (const release of releases) release();
  assert.equal(limiter.size, 0);

  assert.equal(
    limiter.tryAcquire([{ key: "x", limit: 1 }, { key: "y", limit: 1 }, {
      key: "x",
      limit: 1,
    }]),
    undefined,
  );
  assert.equal(limiter.size, 0, "a refused acquire stores nothing");
});

Deno.test("a key listed twice needs two slots", () => {
  const limiter = new ConcurrencyLimiter();
  const twice = [{ key: "k", limit: 2 }, { key: "k", limit: 2 }];
  const release = limiter.tryAcquire(twice);
  assert.ok(release);
  assert.equal(limiter.inFlight("k"), 2);
  assert.equal(limiter.tryAcquire([{ key: "k", limit: 2 }]), undefined);
  release();
  assert.equal(limiter.inFlight("k"), 0);
});

Deno.test("an invalid limit throws RangeError naming the key and value", () => {
  const limiter = new ConcurrencyLimiter();
  assert.throws(
    () => limiter.tryAcquire([{ key: "client:a", limit: 0 }]),
    /concurrency limit for client:a: 0 is not allowed/,
  );
  assert.throws(
    () => limiter.tryAcquire([{ key: "k", limit: 1.5 }]),
    RangeError,
  );
});
