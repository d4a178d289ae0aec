import assert from "node:assert/strict";
import bcrypt from "bcryptjs";
import type { AuthMode, Policy, UserPolicy } from "../src/config/policy.ts";
import { handleLogin, MAX_LOGIN_BODY_BYTES } from "../src/auth/login.ts";
import { LoginThrottle } from "../src/auth/login_throttle.ts";
import {
  bcryptCost,
  dummyPasswordHash,
  hashPassword,
  type PasswordCompare,
  verifyPassword,
} from "../src/auth/password.ts";
import { verifyUserToken } from "../src/auth/jwt_local.ts";

const secret = new TextEncoder().encode("0123456789abcdef0123456789abcdef");
const DAY_MS = 86_400_000;
// Low cost keeps the tests fast; the dummy compare follows the users' cost.
const aliceHash = await hashPassword("correct horse", 4);
const bobHash = await hashPassword("battery staple", 4);

function user(name: string, passwordHash: string): UserPolicy {
  return {
    name,
    passwordHash,
    origin: `users.${name}`,
    allowModels: ["*"],
    denyModels: [],
    denyPromptPatterns: [],
    capMode: "refuse",
    allowContext: false,
    allowManagement: false,
  };
}

const users = [user("alice", aliceHash), user("bob", bobHash)];

function policyFor(
  mode: AuthMode,
  options: { jwtSecret?: Uint8Array; users?: UserPolicy[] } = {},
): Policy {
  return {
    configPath: "butler.yaml",
    warnings: [],
    envVars: [],
    listen: { hostname: "127.0.0.1", port: 8080 },
    upstream: new URL("http://127.0.0.1:11434"),
    upstreamTimeoutMs: 60_000,
    logPrompts: false,
    auth: {
      mode,
      jwtSecret: "jwtSecret" in options ? options.jwtSecret : secret,
      tokenExpiryMs: DAY_MS,
    },
    clients: [],
    users: options.users ?? users,
    rolePolicies: new Map(),
    userOverrides: new Map(),
    enableAccountRoutes: false,
    enableExperimentalRoutes: false,
    corsAllowOrigins: [],
    budgetTimezone: "UTC",
    shutdownGraceMs: 10_000,
  };
}

class ManualClock {
  constructor(public time = 1_700_000_000_000) {}
  now(): number {
    return this.time;
  }
}

/** bcryptjs's compare, recording the hash of every call. */
function countingCompare(): PasswordCompare & { hashes: string[] } {
  const hashes: string[] = [];
  async function compare(password: string, hash: string): Promise<boolean> {
    hashes.push(hash);
    return await bcrypt.compare(password, hash);
  }
  return Object.assign(compare, { hashes });
}

function loginRequest(body: unknown, init: RequestInit = {}): Request {
  return new Request("http://127.0.0.1:8080/auth/login", {
    method: "POST",
    body: typeof body === "string" ? body : JSON.stringify(body),
    ...init,
  });
}

const alice = { username: "alice", password: "correct horse" };

Deno.test("login: the right password gives a token for the user", async () => {
  const policy = policyFor("jwt_standalone");

  const response = await handleLogin(loginRequest(alice), {
    policy,
    throttle: new LoginThrottle(),
    clientAddress: "10.0.0.1",
  });

  assert.equal(response.status, 200);
  assert.equal(response.headers.get("cache-control"), "no-store");
  const body = await response.json();
  assert.deepEqual(Object.keys(body).sort(), ["expires_at", "token"]);
  const verified = await verifyUserToken(body.token, { secret, users });
  assert.ok("user" in verified);
  assert.equal(verified.user.name, "alice");
  const expiresIn = Date.parse(body.expires_at) - Date.now();
  assert.ok(
    expiresIn > DAY_MS - 60_000 && expiresIn <= DAY_MS,
    body.expires_at,
  );
});

Deno.test("login: wrong password and unknown user get the same 401", async () => {
  const policy = policyFor("jwt_standalone");
  const throttle = new LoginThrottle();
  const compare = countingCompare();

  const wrong = await handleLogin(
    loginRequest({ username: "alice", password: "wrong" }),
    { policy, throttle, clientAddress: "10.0.0.1", compare },
  );
  const unknown = await handleLogin(
    loginRequest({ username: "mallory", password: "wrong" }),
    { policy, throttle, clientAddress: "10.0.0.1", compare },
  );

  assert.equal(wrong.status, 401);
  assert.equal(unknown.status, 401);
  const wrongBody = await wrong.text();
  assert.equal(wrongBody, await unknown.text());
  assert.deepEqual(JSON.parse(wrongBody), { error: "invalid credentials" });
  // Both paths ran exactly one bcrypt compare, at the users' cost.
  assert.deepEqual(compare.hashes, [aliceHash, dummyPasswordHash(4)]);
});

Deno.test("login: failures per username are throttled with Retry-After", async () => {
  const clock = new ManualClock();
  const throttle = new LoginThrottle({
    clock,
    maxFailures: 3,
    windowMs: 60_000,
  });
  const policy = policyFor("jwt_standalone");
  const compare = countingCompare();
  const attempt = (password: string, clientAddress: string) =>
    handleLogin(loginRequest({ username: "alice", password }), {
      policy,
      throttle,
      clientAddress,
      compare,
    });

  for (let i = 0; i < 3; i++) {
    assert.equal((await attempt("guess", `10.0.0.${i}`)).status, 401);
  }
  clock.time += 20_000;
  const refused = await attempt("correct horse", "10.0.0.9");

  assert.equal(refused.status, 429);
  assert.equal(refused.headers.get("retry-after"), "40");
  await refused.body?.cancel();
  // No bcrypt work for a throttled attempt.
  assert.equal(compare.hashes.length, 3);

  clock.time += 40_000;
  const afterWindow = await attempt("correct horse", "10.0.0.9");
  assert.equal(afterWindow.status, 200);
  await afterWindow.body?.cancel();
});

Deno.test("login: failures per address are throttled across usernames", async () => {
  const clock = new ManualClock();
  const throttle = new LoginThrottle({
    clock,
    maxFailures: 10,
    maxFailuresPerAddress: 3,
    windowMs: 60_000,
  });
  const policy = policyFor("jwt_standalone");
  const attempt = (username: string, clientAddress: string) =>
    handleLogin(loginRequest({ username, password: "guess" }), {
      policy,
      throttle,
      clientAddress,
    });

  for (const name of ["alice", "bob", "carol"]) {
    await (await attempt(name, "10.0.0.1")).body?.cancel();
  }
  const sameAddress = await attempt("dave", "10.0.0.1");
  const otherAddress = await attempt("dave", "10.0.0.2");

  assert.equal(sameAddress.status, 429);
  assert.equal(sameAddress.headers.get("retry-after"), "60");
  assert.equal(otherAddress.status, 401);
  await sameAddress.body?.cancel();
  await otherAddress.body?.cancel();
});

Deno.test("login: a success clears the username's failures, not the address's", () => {
  const clock = new ManualClock();
  const throttle = new LoginThrottle({
    clock,
    maxFailures: 2,
    maxFailuresPerAddress: 3,
  });

  throttle.recordFailure("alice", "10.0.0.1");
  throttle.recordFailure("alice", "10.0.0.2");
  throttle.recordSuccess("alice", "10.0.0.1");
  throttle.recordFailure("alice", "10.0.0.1");
  throttle.recordFailure("bob", "10.0.0.1");

  assert.deepEqual(throttle.check("alice", "10.0.0.3"), { allowed: true });
  assert.equal(throttle.check("carol", "10.0.0.1").allowed, false);
});

Deno.test("LoginThrottle keeps bounded state: expired entries first, then the oldest", () => {
  const clock = new ManualClock();
  const throttle = new LoginThrottle({
    clock,
    maxFailures: 1,
    maxFailuresPerAddress: 100,
    windowMs: 60_000,
    maxEntries: 3,
  });

  throttle.recordFailure("u1", "a");
  clock.time += 61_000;
  throttle.recordFailure("u2", "a");
  throttle.recordFailure("u3", "a");
  throttle.recordFailure("u4", "a"); // u1 has expired: it goes.
  assert.deepEqual(throttle.trackedEntries, { usernames: 3, addresses: 1 });
  assert.equal(throttle.check("u2", "b").allowed, false);

  throttle.recordFailure("u5", "a"); // Full, none expired: u2, the oldest, goes.
  assert.deepEqual(throttle.trackedEntries, { usernames: 3, addresses: 1 });
  assert.deepEqual(throttle.check("u2", "b"), { allowed: true });
  for (const name of ["u3", "u4", "u5"]) {
    assert.equal(throttle.check(name, "b").allowed, false, name);
  }
});

Deno.test("login: bcrypt work is limited to a few verifications at once", async () => {
  const throttle = new LoginThrottle({ maxConcurrentVerifications: 1 });
  const policy = policyFor("jwt_standalone");
  let release!: () => void;
  const gate = new Promise<void>((resolve) => release = resolve);
  async function slowCompare(password: string, hash: string) {
    await gate;
    return await bcrypt.compare(password, hash);
  }

  const first = handleLogin(loginRequest(alice), {
    policy,
    throttle,
    clientAddress: "10.0.0.1",
    compare: slowCompare,
  });
  const second = await handleLogin(loginRequest(alice), {
    policy,
    throttle,
    clientAddress: "10.0.0.2",
  });
  assert.equal(second.status, 429);
  assert.equal(second.headers.get("retry-after"), "1");
  await second.body?.cancel();

  release();
  assert.equal((await first).status, 200);
  const third = await handleLogin(loginRequest(alice), {
    policy,
    throttle,
    clientAddress: "10.0.0.2",
  });
  assert.equal(third.status, 200);
  await third.body?.cancel();
});

Deno.test("login: guesses running at the same time count against each other", async () => {
  const throttle = new LoginThrottle({ maxConcurrentVerifications: 20 });
  const policy = policyFor("jwt_standalone");
  let release!: () => void;
  const gate = new Promise<void>((resolve) => release = resolve);
  let compares = 0;
  async function heldCompare(password: string, hash: string) {
    compares++;
    await gate;
    return await bcrypt.compare(password, hash);
  }
  const wrong = { username: "alice", password: "guess" };
  const attempts = Array.from(
    { length: 8 },
    (_, i) =>
      handleLogin(loginRequest(wrong), {
        policy,
        throttle,
        clientAddress: `10.0.1.${i}`,
        compare: heldCompare,
      }),
  );
  // While the checks are held, the refused attempts answer; then all eight
  // have been decided, and only the five the username's limit allows reached
  // a password check.
  let settled = 0;
  for (const attempt of attempts) attempt.then(() => settled++);
  for (let i = 0; i < 200 && settled < 3; i++) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.equal(settled, 3);
  assert.equal(compares, 5);
  release();
  const statuses = await Promise.all(attempts.map(async (attempt) => {
    const response = await attempt;
    await response.body?.cancel();
    return response.status;
  }));
  assert.deepEqual(statuses.sort(), [401, 401, 401, 401, 401, 429, 429, 429]);
});

Deno.test("login: a success takes back the attempt counted against the address", async () => {
  const throttle = new LoginThrottle({ maxFailuresPerAddress: 2 });
  const policy = policyFor("jwt_standalone");
  const options = { policy, throttle, clientAddress: "10.0.2.1" };
  for (let i = 0; i < 3; i++) {
    const ok = await handleLogin(loginRequest(alice), options);
    assert.equal(ok.status, 200);
    await ok.body?.cancel();
  }
  // Three successes left the address's count at zero; two failures fill it.
  for (const expected of [401, 401, 429]) {
    const response = await handleLogin(
      loginRequest({ username: "alice", password: "guess" }),
      options,
    );
    assert.equal(response.status, expected);
    await response.body?.cancel();
  }
});

Deno.test("login: a body that does not arrive in time is 408", async () => {
  const policy = policyFor("jwt_standalone");
  let cancelled = false;
  // The client sends the start of its body, then nothing.
  const trickle = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(new TextEncoder().encode('{"username":'));
    },
    cancel() {
      cancelled = true;
    },
  });
  const response = await handleLogin(
    new Request("http://127.0.0.1:8080/auth/login", {
      method: "POST",
      body: trickle,
    }),
    {
      policy,
      throttle: new LoginThrottle(),
      clientAddress: "a",
      bodyTimeoutMs: 50,
    },
  );
  assert.equal(response.status, 408);
  assert.match((await response.json()).error, /took too long/);
  assert.ok(cancelled, "the body was not given up on");
});

Deno.test("login: the body is bounded", async () => {
  const policy = policyFor("jwt_standalone");
  const options = { policy, throttle: new LoginThrottle(), clientAddress: "a" };
  const big = JSON.stringify({
    username: "alice",
    password: "x".repeat(MAX_LOGIN_BODY_BYTES),
  });
  const chunks = [new TextEncoder().encode(big)];
  const streamed = new ReadableStream<Uint8Array>({
    pull(controller) {
      const chunk = chunks.shift();
      if (chunk === undefined) controller.close();
      else controller.enqueue(chunk);
    },
  });

  const declared = await handleLogin(loginRequest(big), options);
  const undeclared = await handleLogin(
    new Request("http://127.0.0.1:8080/auth/login", {
      method: "POST",
      body: streamed,
    }),
    options,
  );

  assert.equal(declared.status, 413);
  assert.equal(undeclared.status, 413);
  assert.match((await declared.json()).error, /8192 bytes/);
  await undeclared.body?.cancel();
});

Deno.test("login: bodies other than two strings are 400, naming the field", async () => {
  const policy = policyFor("jwt_standalone");
  const cases: [unknown, RegExp][] = [
    ["not json", /not JSON/],
    [["alice", "pw"], /not a JSON object/],
    [null, /not a JSON object/],
    [
      { username: 1, password: "pw" },
      /^username: must be a string, got number$/,
    ],
    [{ username: "alice" }, /^password: required field is missing/],
    [
      { Username: "alice", password: "pw" },
      /^username: required field is missing \(the name is lower case\)$/,
    ],
    [
      { username: "alice", password: ["pw"] },
      /^password: must be a string, got an array$/,
    ],
  ];

  for (const [body, message] of cases) {
    const response = await handleLogin(loginRequest(body), {
      policy,
      throttle: new LoginThrottle(),
      clientAddress: "a",
    });
    assert.equal(response.status, 400, JSON.stringify(body));
    assert.match((await response.json()).error, message);
  }
});

Deno.test("login: 404 in modes without local users, 405 for other methods", async () => {
  const cases: [Policy, number][] = [
    [policyFor("api_key"), 404],
    [policyFor("oidc"), 404],
    [policyFor("either", { jwtSecret: undefined }), 404],
    [policyFor("either"), 200],
  ];
  for (const [policy, status] of cases) {
    const response = await handleLogin(loginRequest(alice), {
      policy,
      throttle: new LoginThrottle(),
      clientAddress: "a",
    });
    assert.equal(response.status, status, policy.auth.mode);
    if (status === 404) {
      assert.deepEqual(await response.json(), { error: "not found" });
    } else {
      await response.body?.cancel();
    }
  }

  const get = await handleLogin(
    new Request("http://127.0.0.1:8080/auth/login"),
    {
      policy: policyFor("jwt_standalone"),
      throttle: new LoginThrottle(),
      clientAddress: "a",
    },
  );
  assert.equal(get.status, 405);
  assert.equal(get.headers.get("allow"), "POST");
  await get.body?.cancel();
});

Deno.test("login: a token issued earlier expires, a removed user is refused", async () => {
  const policy = policyFor("jwt_standalone");
  const throttle = new LoginThrottle();

  const old = await handleLogin(loginRequest(alice), {
    policy,
    throttle,
    clientAddress: "a",
    now: Date.now() - 2 * DAY_MS,
  });
  const fresh = await handleLogin(loginRequest(alice), {
    policy,
    throttle,
    clientAddress: "a",
  });
  const { token: oldToken } = await old.json();
  const { token: freshToken } = await fresh.json();

  assert.deepEqual(await verifyUserToken(oldToken, { secret, users }), {
    reason: "token_expired",
  });
  assert.ok("user" in await verifyUserToken(freshToken, { secret, users }));
  assert.deepEqual(
    await verifyUserToken(freshToken, {
      secret,
      users: users.filter((candidate) => candidate.name !== "alice"),
    }),
    { reason: "token_user_unknown" },
  );
});

Deno.test("verifyPassword: matches bcrypt $2a$, $2b$ and $2y$ hashes", async () => {
  const body = aliceHash.slice(4);

  for (const prefix of ["$2a$", "$2b$", "$2y$"]) {
    assert.ok(await verifyPassword("correct horse", prefix + body), prefix);
    assert.equal(await verifyPassword("wrong", prefix + body), false, prefix);
  }
});

Deno.test("verifyPassword: unknown users and malformed hashes run a dummy compare", async () => {
  const compare = countingCompare();

  assert.equal(await verifyPassword("pw", undefined, { compare }), false);
  assert.equal(
    await verifyPassword("pw", undefined, { compare, dummyCost: 4 }),
    false,
  );
  assert.equal(
    await verifyPassword("pw", "plain-text-password", {
      compare,
      dummyCost: 4,
    }),
    false,
  );

  assert.deepEqual(compare.hashes.map(bcryptCost), [12, 4, 4]);
  assert.equal(dummyPasswordHash(12).length, 60);
});

Deno.test("hashPassword: cost 12 by default, range checked", async () => {
  const hash = await hashPassword("pw", 4);

  assert.equal(bcryptCost(await hashPassword("pw")), 12);
  assert.equal(bcryptCost(hash), 4);
  assert.match(hash, /^\$2b\$04\$/);
  await assert.rejects(() => hashPassword("pw", 3), /cost: 3 is out of range/);
  assert.throws(() => dummyPasswordHash(32), /cost: 32 is out of range/);
  assert.equal(bcryptCost("$2b$12$" + "a".repeat(53)), 12);
  assert.equal(bcryptCost("$1$abc"), undefined);
});
