/**
 * Token budgets without a network: admission, reservation and settlement,
 * the day boundary in a time zone, the state file, and the budget cap on
 * request bodies.
 */

import assert from "node:assert/strict";
import { isRefusal, type Refusal } from "../src/errors/refusal.ts";
import {
  type BudgetCheck,
  budgetChecksFor,
  TokenBudgets,
} from "../src/policy/budgets.ts";
import {
  parseUsage,
  readUsage,
  startUsageSaver,
  StateFileError,
  writeUsage,
} from "../src/policy/budget_store.ts";
import { applyBudgetCap } from "../src/policy/budget_cap.ts";
import { parseJsonAsGo, serializeJson } from "../src/request/go_json.ts";
import type { SubjectPolicy } from "../src/config/policy.ts";

const APP: BudgetCheck = { key: "client:app", limit: 100 };

function clock(iso: string) {
  const state = { now: Date.parse(iso) };
  return { state, now: () => state.now };
}

function granted(value: ReturnType<TokenBudgets["admit"]>) {
  assert.ok(!isRefusal(value), JSON.stringify(value));
  return value;
}

function refusal(value: ReturnType<TokenBudgets["admit"]>): Refusal {
  assert.ok(isRefusal(value), "expected a refusal");
  return value;
}

Deno.test("no budget: admitted without a limit, nothing reserved", () => {
  const budgets = new TokenBudgets();
  assert.deepEqual(budgets.admit([]), {});
  const reservation = budgets.reserve([], 50);
  assert.equal(reservation.amount, 0);
  reservation.settle(10);
  assert.equal(budgets.dirty, false);
});

Deno.test("remaining is the smallest remainder across subjects", () => {
  const budgets = new TokenBudgets();
  const checks = [APP, { key: "user:ann", limit: 30 }];
  assert.equal(granted(budgets.admit(checks)).remaining, 30);
  budgets.reserve(checks, 10).settle(10);
  assert.equal(granted(budgets.admit(checks)).remaining, 20);
  assert.equal(budgets.used("client:app"), 10);
  assert.equal(budgets.used("user:ann"), 10);
});

Deno.test("reservations hold tokens until settled to the actual count", () => {
  const budgets = new TokenBudgets();
  const first = budgets.reserve([APP], 60);
  assert.equal(granted(budgets.admit([APP])).remaining, 40);
  const second = budgets.reserve([APP], 40);

  // Everything left is held by requests in flight: retry soon, not tomorrow.
  const held = refusal(budgets.admit([APP]));
  assert.equal(held.status, 429);
  assert.equal(held.reason, "token_budget_reserved");
  assert.equal(held.headers?.["retry-after"], "1");

  first.settle(25);
  first.settle(1000); // only the first settlement counts
  assert.equal(budgets.used("client:app"), 25);
  assert.equal(granted(budgets.admit([APP])).remaining, 35);
  second.settle(0);
  assert.equal(granted(budgets.admit([APP])).remaining, 75);
  assert.equal(budgets.dirty, true);
});

Deno.test("a spent budget is 429 with Retry-After until local midnight", () => {
  const { now } = clock("2026-03-10T20:30:00Z");
  const budgets = new TokenBudgets({ timeZone: "Europe/Paris", now });
  budgets.reserve([APP], 100).settle(100);
  const spent = refusal(budgets.admit([APP]));
  assert.equal(spent.status, 429);
  assert.equal(spent.reason, "token_budget_spent");
  // 21:30 in Paris (UTC+1 in March before the change): 2.5 h to midnight.
  assert.equal(spent.headers?.["retry-after"], String(2.5 * 3600));
  assert.match(spent.message, /100/);
  assert.match(spent.message, /Europe\/Paris/);
});

Deno.test("the day turns at midnight in the budget time zone", () => {
  const time = clock("2026-03-10T22:59:00Z");
  const budgets = new TokenBudgets({
    timeZone: "Europe/Paris",
    now: time.now,
  });
  budgets.reserve([APP], 100).settle(100);
  assert.equal(budgets.today(), "2026-03-10");
  assert.ok(isRefusal(budgets.admit([APP])));

  time.state.now = Date.parse("2026-03-10T23:00:00Z"); // midnight in Paris
  assert.equal(budgets.today(), "2026-03-11");
  assert.equal(granted(budgets.admit([APP])).remaining, 100);
});

Deno.test("a request counts against the day it started on", () => {
  const time = clock("2026-03-10T23:59:00Z");
  const budgets = new TokenBudgets({ now: time.now });
  const reservation = budgets.reserve([APP], 80);
  time.state.now = Date.parse("2026-03-11T00:01:00Z");
  assert.equal(granted(budgets.admit([APP])).remaining, 100);
  reservation.settle(80);
  assert.equal(budgets.used("client:app"), 0);
});

Deno.test("secondsUntilReset is right across daylight saving changes", () => {
  // New York springs forward on 2026-03-08: that day has 23 hours.
  const { now } = clock("2026-03-08T06:30:00Z"); // 01:30 EST
  const budgets = new TokenBudgets({ timeZone: "America/New_York", now });
  assert.equal(
    budgets.secondsUntilReset(),
    (Date.parse("2026-03-09T04:00:00Z") - now()) / 1000,
  );
});

Deno.test("budgetChecksFor lists the subjects that have a budget", () => {
  const policy = (maxTokensPerDay?: number) =>
    ({ maxTokensPerDay }) as unknown as SubjectPolicy;
  assert.deepEqual(
    budgetChecksFor([
      { key: "client:app", policy: policy(500) },
      { key: "user:ann", policy: policy(undefined) },
    ]),
    [{ key: "client:app", limit: 500 }],
  );
});

Deno.test("usage loaded from a snapshot counts for today only", () => {
  const { now } = clock("2026-05-01T12:00:00Z");
  const budgets = new TokenBudgets({
    now,
    usage: {
      "client:app": { day: "2026-05-01", generated: 70 },
      "user:old": { day: "2026-04-30", generated: 999 },
    },
  });
  assert.equal(granted(budgets.admit([APP])).remaining, 30);
  assert.equal(
    granted(budgets.admit([{ key: "user:old", limit: 100 }])).remaining,
    100,
  );
  assert.deepEqual(budgets.snapshot(), {
    "client:app": { day: "2026-05-01", generated: 70 },
  });
});

Deno.test("state file: written atomically, read back, missing is empty", async () => {
  const dir = await Deno.makeTempDir({ prefix: "butler-state-" });
  const path = `${dir}/usage.json`;
  assert.equal(await readUsage(path), undefined);

  const usage = { "client:app": { day: "2026-05-01", generated: 42 } };
  await writeUsage(path, { usage, timeZone: "UTC" });
  assert.deepEqual(await readUsage(path), usage);
  const text = JSON.parse(await Deno.readTextFile(path));
  assert.equal(text.version, 1);
  assert.equal(text.time_zone, "UTC");
  // Only the state file is left in the directory: the temporary was renamed.
  const names = [];
  for await (const entry of Deno.readDir(dir)) names.push(entry.name);
  assert.deepEqual(names, ["usage.json"]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("state file: corrupt or foreign content stops with a way out", () => {
  const cases = [
    "{not json",
    "[]",
    '{"version": 2, "usage": {}}',
    '{"version": 1}',
    '{"version": 1, "usage": {"client:a": {"day": "May 1", "generated": 1}}}',
    '{"version": 1, "usage": {"client:a": {"day": "2026-05-01", "generated": -1}}}',
  ];
  for (const text of cases) {
    assert.throws(
      () => parseUsage("/var/lib/butler/usage.json", text),
      (error: unknown) => {
        assert.ok(error instanceof StateFileError, text);
        assert.match(error.message, /^state_file \/var\/lib\/butler\/usage/);
        assert.match(error.message, /move it aside/);
        assert.match(error.message, /usage\.json\.bad/);
        return true;
      },
    );
  }
});

Deno.test("state file: an unreadable file is an error, not a first run", async () => {
  const dir = await Deno.makeTempDir({ prefix: "butler-state-" });
  // A directory where the file should be cannot be read as a file.
  await Deno.mkdir(`${dir}/usage.json`);
  await assert.rejects(
    () => readUsage(`${dir}/usage.json`),
    (error: unknown) =>
      error instanceof StateFileError && /cannot be read/.test(error.message),
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("usage saver writes when dirty, and always when asked", async () => {
  const dir = await Deno.makeTempDir({ prefix: "butler-state-" });
  const path = `${dir}/usage.json`;
  const budgets = new TokenBudgets();
  const errors: unknown[] = [];
  const saver = startUsageSaver(budgets, {
    path,
    intervalMs: 60_000,
    onError: (error) => errors.push(error),
  });
  try {
    await saver.flush();
    assert.equal(await readUsage(path), undefined); // clean: nothing written
    budgets.reserve([APP], 10).settle(7);
    await saver.flush();
    assert.equal((await readUsage(path))?.["client:app"].generated, 7);
    await Deno.remove(path);
    await saver.flush({ always: true });
    assert.equal((await readUsage(path))?.["client:app"].generated, 7);

    // A failed write is reported and retried.
    await Deno.remove(dir, { recursive: true });
    budgets.reserve([APP], 10).settle(1);
    await saver.flush();
    assert.equal(errors.length, 1);
    assert.equal(budgets.dirty, true);
  } finally {
    saver.stop();
  }
});

Deno.test("budget cap lowers the limit to what is left, never refuses", () => {
  const cases: Array<[string, string, number, string]> = [
    // [capField, body, remaining, expected forwarded body]
    [
      "max_tokens",
      '{"model":"m","max_tokens":500}',
      120,
      '{"model":"m","max_tokens":120}',
    ],
    ["max_tokens", '{"model":"m"}', 64, '{"model":"m","max_tokens":64}'],
    [
      "max_output_tokens",
      '{"model":"m","MAX_OUTPUT_TOKENS":0}',
      9,
      '{"model":"m","max_output_tokens":9}',
    ],
    [
      "options.num_predict",
      '{"model":"m","options":{"num_predict":-1,"temperature":0}}',
      33,
      '{"model":"m","options":{"temperature":0,"num_predict":33}}',
    ],
  ];
  for (const [capField, text, remaining, expected] of cases) {
    const body = parseJsonAsGo(new TextEncoder().encode(text));
    const cap = applyBudgetCap(body, {
      capField: capField as "max_tokens",
      remaining,
    });
    assert.equal(serializeJson(cap.body!), expected);
    assert.equal(cap.limit, remaining);
  }

  // A smaller limit the client asked for stands, and is what is reserved.
  const body = parseJsonAsGo(
    new TextEncoder().encode('{"options":{"num_predict":20.9}}'),
  );
  const cap = applyBudgetCap(body, {
    capField: "options.num_predict",
    remaining: 500,
  });
  assert.equal(cap.body, undefined);
  assert.equal(cap.limit, 20);
});
