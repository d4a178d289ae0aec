/**
 * bcrypt compares run on worker threads: right answers, an event loop that
 * keeps turning during a costly compare, a fallback when workers cannot run,
 * and login timing that does not depend on which user's hash is checked.
 */

import assert from "node:assert/strict";
import bcrypt from "bcryptjs";
import {
  compareOffThread,
  createPasswordCompare,
  PasswordWorkerError,
} from "../src/auth/password_worker.ts";
import { dummyPasswordHash, verifyPassword } from "../src/auth/password.ts";

const CHEAP = bcrypt.hashSync("right", 4);

Deno.test("a worker compare answers true for the password and false otherwise", async () => {
  assert.equal(await compareOffThread("right", CHEAP), true);
  assert.equal(await compareOffThread("wrong", CHEAP), false);
  assert.equal(await compareOffThread("right", "not a hash"), false);
});

Deno.test("the event loop keeps turning during a costly compare", async () => {
  const costly = bcrypt.hashSync("right", 12);
  let ticks = 0;
  const timer = setInterval(() => ticks++, 5);
  try {
    assert.equal(await compareOffThread("right", costly), true);
  } finally {
    clearInterval(timer);
  }
  // A compare at cost 12 takes a few hundred ms. On this thread bcryptjs
  // yields only every 100 ms, so a 5 ms timer would fire about 3 times;
  // with the compare on a worker it fires throughout.
  assert.ok(ticks >= 15, `the timer fired only ${ticks} times`);
});

Deno.test("when workers cannot run, compares fall back to this thread and say so once", async () => {
  const original = globalThis.Worker;
  const reasons: string[] = [];
  // A platform without workers: constructing one throws.
  globalThis.Worker = class {
    constructor() {
      throw new Error("workers are not available");
    }
  } as unknown as typeof Worker;
  try {
    await assert.rejects(
      () => compareOffThread("right", CHEAP),
      PasswordWorkerError,
    );
    const compare = createPasswordCompare({
      onFallback: (reason) => reasons.push(reason),
    });
    assert.equal(await compare("right", CHEAP), true);
    assert.equal(await compare("wrong", CHEAP), false);
  } finally {
    globalThis.Worker = original;
  }
  assert.equal(reasons.length, 1);
  assert.match(reasons[0], /workers are not available/);
});

Deno.test("a cheaper hash is checked alongside a dummy at the highest cost", async () => {
  const compared: string[] = [];
  const compare = (password: string, hash: string) => {
    compared.push(hash);
    return Promise.resolve(bcrypt.compareSync(password, hash));
  };
  const dummy = dummyPasswordHash(6);

  // Known user, cheaper hash: both run; the answer is the real hash's.
  assert.equal(
    await verifyPassword("right", CHEAP, { compare, dummyCost: 6 }),
    true,
  );
  assert.deepEqual(compared.sort(), [CHEAP, dummy].sort());
  compared.length = 0;
  assert.equal(
    await verifyPassword("wrong", CHEAP, { compare, dummyCost: 6 }),
    false,
  );
  assert.equal(compared.length, 2);

  // Known user at the highest cost: one compare. Unknown user: the dummy.
  compared.length = 0;
  const costly = bcrypt.hashSync("right", 6);
  assert.equal(
    await verifyPassword("right", costly, { compare, dummyCost: 6 }),
    true,
  );
  assert.deepEqual(compared, [costly]);
  compared.length = 0;
  assert.equal(
    await verifyPassword("right", undefined, { compare, dummyCost: 6 }),
    false,
  );
  assert.deepEqual(compared, [dummy]);
});
