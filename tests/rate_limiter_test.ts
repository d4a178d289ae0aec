import assert from "node:assert/strict";
import type { Rate } from "../src/config/policy.ts";
import { type Clock, RateLimiter } from "../src/policy/rate_limiter.ts";
import { rateLimitHeaders } from "../src/policy/rate_headers.ts";

class ManualClock implements Clock {
  ms = 0;
  now(): number {
    return this.ms;
  }
}

function rate(count: number, periodMs: number): Rate {
  return { count, periodMs, text: `${count}/${periodMs}ms` };
}

function setup(options: { maxEntries?: number } = {}) {
  const clock = new ManualClock();
  return { clock, limiter: new RateLimiter({ clock, ...options }) };
}

Deno.test("a burst of count is allowed, with remaining counting down", () => {
  const { limiter } = setup();
  const fivePerSecond = rate(5, 1000);

  const remaining = [];
  for (let i = 0; i < 5; i++) {
    const decision = limiter.take("client:a", fivePerSecond);
    assert.equal(decision.allowed, true);
    remaining.push(decision.remaining);
  }
  assert.deepEqual(remaining, [4, 3, 2, 1, 0]);

  const refused = limiter.take("client:a", fivePerSecond);
  assert.equal(refused.allowed, false);
  assert.equal(refused.remaining, 0);
  assert.equal(refused.retryAfterSeconds, 1);
  assert.equal(refused.limit, 5);
  assert.equal(refused.periodSeconds, 1);
});

Deno.test("after the burst, exactly one request per emission interval", () => {
  const { clock, limiter } = setup();
  const tenPer10s = rate(10, 10_000); // one every 1000 ms
  for (let i = 0; i < 10; i++) limiter.take("k", tenPer10s);

  clock.ms = 999;
  assert.equal(limiter.take("k", tenPer10s).allowed, false);
  clock.ms = 1000;
  const onTime = limiter.take("k", tenPer10s);
  assert.equal(onTime.allowed, true);
  assert.equal(onTime.remaining, 0);
  assert.equal(limiter.take("k", tenPer10s).allowed, false);

  clock.ms = 2000;
  assert.equal(limiter.take("k", tenPer10s).allowed, true);
  assert.equal(limiter.take("k", tenPer10s).allowed, false);
});

Deno.test("an emission interval that is not a whole number of ms", () => {
  const { clock, limiter } = setup();
  const threePerSecond = rate(3, 1000); // one every 333.33… ms
  for (let i = 0; i < 3; i++) {
    assert.equal(limiter.take("k", threePerSecond).allowed, true);
  }
  assert.equal(limiter.take("k", threePerSecond).allowed, false);

  clock.ms = 1000; // three intervals later: full allowance again
  const decisions = [0, 1, 2, 3].map(() => limiter.take("k", threePerSecond));
  assert.deepEqual(decisions.map((d) => d.allowed), [true, true, true, false]);
  assert.deepEqual(decisions.map((d) => d.remaining), [2, 1, 0, 0]);
});

Deno.test("rounding of the interval never refuses an on-time request", () => {
  const { clock, limiter } = setup();
  const sevenPerSecond = rate(7, 1000); // sums of 1000/7 are inexact
  for (let i = 0; i < 7; i++) limiter.take("k", sevenPerSecond);

  clock.ms = 1000 / 7;
  const onTime = limiter.take("k", sevenPerSecond);
  assert.equal(onTime.allowed, true);
  assert.equal(onTime.remaining, 0);
  assert.equal(limiter.take("k", sevenPerSecond).allowed, false);
});

Deno.test("no double burst across a fixed-window boundary", () => {
  const { clock, limiter } = setup();
  const tenPerMinute = rate(10, 60_000);

  // A fixed-window counter would allow 10 before 60 s and 10 more after.
  let allowed = 0;
  for (let ms = 59_000; ms <= 61_000; ms += 20) {
    clock.ms = ms;
    if (limiter.take("k", tenPerMinute).allowed) allowed++;
  }
  assert.equal(allowed, 10);

  // The allowance comes back one per 6 s after the burst at 59 s.
  clock.ms = 64_999;
  assert.equal(limiter.take("k", tenPerMinute).allowed, false);
  clock.ms = 65_000;
  assert.equal(limiter.take("k", tenPerMinute).allowed, true);
});

Deno.test("Retry-After is the wait rounded up to whole seconds", () => {
  const { clock, limiter } = setup();
  const onePer90s = rate(1, 90_000);
  const first = limiter.take("k", onePer90s);
  assert.equal(first.allowed, true);
  assert.equal(first.retryAfterSeconds, 0);
  assert.equal(first.resetSeconds, 90);
  assert.equal(first.periodSeconds, 90);

  const cases: Array<[number, number]> = [
    [500, 90], // 89.5 s left
    [88_999, 2], // 1.001 s
    [89_000, 1], // exactly 1 s
    [89_999, 1], // 1 ms
  ];
  for (const [ms, seconds] of cases) {
    clock.ms = ms;
    const decision = limiter.take("k", onePer90s);
    assert.equal(decision.allowed, false, `at ${ms} ms`);
    assert.equal(decision.retryAfterSeconds, seconds, `at ${ms} ms`);
    assert.equal(decision.resetSeconds, seconds, `reset at ${ms} ms`);
  }
  clock.ms = 90_000;
  assert.equal(limiter.take("k", onePer90s).allowed, true);
});

Deno.test("the allowance refills smoothly and resetSeconds tracks it", () => {
  const { clock, limiter } = setup();
  const fourPer4s = rate(4, 4000);
  for (let i = 0; i < 4; i++) limiter.take("k", fourPer4s);

  clock.ms = 2500; // 2.5 intervals back: two requests, then refused
  const a = limiter.take("k", fourPer4s);
  assert.equal(a.allowed, true);
  assert.equal(a.remaining, 1);
  assert.equal(a.resetSeconds, 3); // TAT 5000 ms
  assert.equal(limiter.take("k", fourPer4s).allowed, true);
  const refused = limiter.take("k", fourPer4s);
  assert.equal(refused.allowed, false);
  assert.equal(refused.retryAfterSeconds, 1); // allowed again at 3000 ms
  assert.equal(refused.resetSeconds, 4); // full again at 6000 ms
});

Deno.test("takeAll consumes nothing when any check refuses", () => {
  const { limiter } = setup();
  const client = rate(5, 60_000);
  const global = rate(1, 60_000);
  const checks = [
    { key: "client:a", rate: client },
    { key: "global", rate: global },
  ];

  const first = limiter.takeAll(checks);
  assert.equal(first.allowed, true);
  assert.equal(first.remaining, 0); // the tightest: global
  assert.equal(first.limit, 1);

  for (let i = 0; i < 3; i++) {
    const refused = limiter.takeAll(checks);
    assert.equal(refused.allowed, false);
    assert.equal(refused.limit, 1); // the refusing decision
  }

  // The client's own allowance only paid for the one request that passed.
  const alone = limiter.take("client:a", client);
  assert.equal(alone.allowed, true);
  assert.equal(alone.remaining, 3);
});

Deno.test("takeAll returns the refusal with the longest wait", () => {
  const { limiter } = setup();
  const perMinute = rate(1, 60_000);
  const perHour = rate(1, 3_600_000);
  limiter.take("a", perMinute);
  limiter.take("b", perHour);

  const refused = limiter.takeAll([
    { key: "a", rate: perMinute },
    { key: "b", rate: perHour },
  ]);
  assert.equal(refused.allowed, false);
  assert.equal(refused.retryAfterSeconds, 3600);
});

Deno.test("takeAll counts a key listed twice twice", () => {
  const { limiter } = setup();
  const two = rate(2, 60_000);
  const both = limiter.takeAll([{ key: "k", rate: two }, {
    key: "k",
    rate: two,
  }]);
  assert.equal(both.allowed, true);
  assert.equal(both.remaining, 0);
  assert.equal(limiter.take("k", two).allowed, false);
});

Deno.test("keys are independent", () => {
  const { limiter } = setup();
  const one = rate(1, 60_000);
  assert.equal(limiter.take("client:a", one).allowed, true);
  assert.equal(limiter.take("client:a", one).allowed, false);
  assert.equal(limiter.take("client:b", one).allowed, true);
});

Deno.test("a stricter rate before a reload never blocks longer than one new period", () => {
  const { limiter } = setup();
  limiter.take("client:a", rate(1, 86_400_000)); // 1/day, used up

  const relaxed = rate(100, 60_000); // reloaded as 100/min
  const decision = limiter.take("client:a", relaxed);
  assert.equal(decision.allowed, false);
  assert.equal(decision.retryAfterSeconds, 1); // one interval (600 ms)
  assert.equal(decision.resetSeconds, 60);
});

Deno.test("the same key keeps its counter across limiter users (reload by name)", () => {
  const { limiter } = setup();
  const before = rate(2, 60_000);
  limiter.take("client:a", before);
  limiter.take("client:a", before);

  const after = { ...before, text: "2/min" }; // a new Policy object
  assert.equal(limiter.take("client:a", after).allowed, false);
});

Deno.test("idle keys expire: sweep drops them and size shrinks", () => {
  const { clock, limiter } = setup();
  const tenPerSecond = rate(10, 1000);
  for (let i = 0; i < 100_000; i++) limiter.take(`user:${i}`, tenPerSecond);
  assert.equal(limiter.size, 100_000);

  clock.ms = 99; // TAT of every key is 100 ms
  limiter.sweep();
  assert.equal(limiter.size, 100_000);

  clock.ms = 100;
  limiter.sweep();
  assert.equal(limiter.size, 0);
});

Deno.test("expiry happens lazily from take, without calling sweep", () => {
  const { clock, limiter } = setup();
  const tenPerSecond = rate(10, 1000);
  for (let i = 0; i < 100_000; i++) limiter.take(`user:${i}`, tenPerSecond);

  clock.ms = 5000;
  const hot = rate(1_000_000, 1000);
  for (let i = 0; i < 20_000; i++) limiter.take("client:hot", hot);
  assert.ok(limiter.size <= 1, `size ${limiter.size}`);
});

Deno.test("state is bounded while keys keep arriving", () => {
  const { clock, limiter } = setup();
  const tenPerSecond = rate(10, 1000);
  let largest = 0;
  for (let i = 0; i < 200_000; i++) {
    clock.ms = i; // one new key per ms; each expires after 100 ms
    limiter.take(`user:${i}`, tenPerSecond);
    largest = Math.max(largest, limiter.size);
  }
  assert.ok(largest <= 2_048 + 100, `largest ${largest}`);
});

Deno.test("maxEntries evicts the least recently counted keys", () => {
  const { limiter } = setup({ maxEntries: 100 });
  const onePerHour = rate(1, 3_600_000);
  for (let i = 0; i < 150; i++) limiter.take(`k${i}`, onePerHour);
  assert.equal(limiter.size, 100);

  // k0..k49 were evicted: their allowance is full again (fail-open).
  assert.equal(limiter.take("k0", onePerHour).allowed, true);
  // Recent keys kept their state.
  assert.equal(limiter.take("k149", onePerHour).allowed, false);
  assert.equal(limiter.take("k60", onePerHour).allowed, false);
  assert.ok(limiter.size <= 100);
});

Deno.test("invalid arguments throw RangeError naming the value", () => {
  const { limiter } = setup();
  assert.throws(() => limiter.takeAll([]), RangeError);
  assert.throws(
    () => limiter.take("k", rate(0, 1000)),
    /rate for k: count 0 is not allowed/,
  );
  assert.throws(() => limiter.take("k", rate(1, 0)), /periodMs 0/);
  assert.throws(() => new RateLimiter({ maxEntries: 0 }), /maxEntries: 0/);
});

Deno.test("headers: an allowed request has the policy and state, no Retry-After", () => {
  const { limiter } = setup();
  const decision = limiter.take("client:a", rate(60, 60_000));
  assert.deepEqual(rateLimitHeaders("client", decision), {
    "RateLimit-Policy": '"client";q=60;w=60',
    "RateLimit": '"client";r=59;t=1',
  });
});

Deno.test("headers: a refusal carries Retry-After equal to t", () => {
  const { clock, limiter } = setup();
  const onePerMinute = rate(1, 60_000);
  limiter.take("k", onePerMinute);
  clock.ms = 15_500;
  const refused = limiter.take("k", onePerMinute);
  assert.deepEqual(rateLimitHeaders("global", refused), {
    "RateLimit-Policy": '"global";q=1;w=60',
    "RateLimit": '"global";r=0;t=45',
    "Retry-After": "45",
  });
});

Deno.test("headers: the policy name is a valid structured-field string", () => {
  const { limiter } = setup();
  const decision = limiter.take("k", rate(2, 1000));
  const headers = rateLimitHeaders('a"b\\c\u00e9\n', decision);
  assert.equal(headers["RateLimit-Policy"], '"a\\"b\\\\c__";q=2;w=1');
  assert.doesNotThrow(() => new Headers(headers));
});
