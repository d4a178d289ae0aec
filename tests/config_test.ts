import assert from "node:assert/strict";
import { ConfigError } from "../src/config/errors.ts";
import { compilePolicy, loadPolicy } from "../src/config/load.ts";
import { describePolicy } from "../src/describe.ts";

const KEY = "0123456789abcdef";
const KEY_DIGEST =
  "9f9f5111f7b27a781f1f1ddde5ebc2dd2b796bfc7365c9c28b548e564176929f";
const OTHER_KEY = "fedcba9876543210";
const JWT_SECRET = "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t!";
const BEARER = "metrics-bearer-0123";
const BCRYPT = "$2b$04$M4s/02h5XXDbXe.tkbRvh.CD4g4lr5tU3jZQBlE1bwJJXa/8Jn7Hm";

/** Joins lines so a test can count them: line n is `lines[n - 1]`. */
function yaml(...lines: string[]): string {
  return lines.join("\n") + "\n";
}

function envOf(values: Record<string, string>) {
  return (name: string) => values[name];
}

function compile(text: string, env: Record<string, string> = {}) {
  return compilePolicy(text, { path: "butler.yaml", env: envOf(env) });
}

/** Compiles `text`, expects a ConfigError, returns its message lines. */
async function errorLines(
  text: string,
  env: Record<string, string> = {},
): Promise<string[]> {
  const error = await compile(text, env).then(
    () => "compiled without error",
    (caught: unknown) => caught,
  );
  assert.ok(error instanceof ConfigError, `expected ConfigError: ${error}`);
  assert.equal(error.message.split("\n").length, error.issues.length);
  return error.message.split("\n");
}

const MINIMAL = [
  "upstream: http://127.0.0.1:11434",
  "clients:",
  "  - name: local",
  `    key: ${KEY}`,
];

Deno.test("a full config compiles to the expected policy", async () => {
  const policy = await compile(
    yaml(
      "listen: '[::1]:9090'",
      "upstream: https://ollama.internal:11434/",
      "upstream_timeout: 2m",
      "global_rate_limit: 100/second",
      "global_max_concurrent: 4",
      "log_prompts: true",
      "auth:",
      "  mode: either",
      "  jwt_secret: ${JWT}",
      "  token_expiry: 7d",
      "  oidc:",
      "    issuer: http://localhost:8180/realms/r",
      "    client_id: butler",
      "    role_claim_path: realm_access.roles",
      "    username_claim: email",
      "clients:",
      "  - name: app",
      "    key: ${APP_KEY}",
      "    allow_models: [' llama3.2 ', 'qwen2.5:7b']",
      "    deny_models: ['gpt-oss']",
      "    rate_limit: 10/min",
      "    max_request_bytes: 1000",
      "    max_ctx: 4096",
      "    max_predict: 0",
      "    max_concurrent: 2",
      "    max_tokens_per_day: 5000",
      "    max_keep_alive: 300",
      "    deny_prompt_patterns: ['(?i)\\bignore\\b', '[[:digit:]]{16}']",
      "    cap_mode: clamp",
      "    allow_context: true",
      "    allow_management: true",
      "    require_user_auth: true",
      `  - name: hashed`,
      `    key_sha256: ${"AB".repeat(32)}`,
      "    max_keep_alive: 1h",
      "users:",
      "  - name: alice",
      `    password_hash: '${BCRYPT}'`,
      "    rate_limit: unlimited",
      "role_policies:",
      "  admin: {allow_models: ['*']}",
      "user_overrides:",
      "  bob: {allow_models: [llama3.2], max_ctx: 2048}",
      "enable_account_routes: true",
      "enable_experimental_routes: true",
      "metrics: {bearer: '${BEARER}'}",
      "tls: {cert: /c.pem, key: /k.pem}",
      "cors:",
      "  allow_origins: ['https://App.Example.com:443', 'http://localhost:3000']",
      "state_file: /var/lib/butler/state.json",
      "budget_timezone: Europe/Paris",
      "shutdown_grace: 0",
    ),
    { JWT: JWT_SECRET, APP_KEY: KEY, BEARER },
  );

  assert.equal(policy.configPath, "butler.yaml");
  assert.deepEqual(policy.envVars, ["APP_KEY", "BEARER", "JWT"]);
  assert.deepEqual(policy.listen, { hostname: "::1", port: 9090 });
  assert.equal(policy.upstream.href, "https://ollama.internal:11434/");
  assert.equal(policy.upstreamTimeoutMs, 120_000);
  assert.deepEqual(policy.globalRateLimit, {
    count: 100,
    periodMs: 1000,
    text: "100/second",
  });
  assert.equal(policy.globalMaxConcurrent, 4);
  assert.equal(policy.logPrompts, true);

  assert.equal(policy.auth.mode, "either");
  assert.deepEqual(policy.auth.jwtSecret, new TextEncoder().encode(JWT_SECRET));
  assert.equal(policy.auth.tokenExpiryMs, 7 * 86_400_000);
  assert.equal(policy.auth.oidc?.issuer.href, "http://localhost:8180/realms/r");
  assert.equal(policy.auth.oidc?.clientId, "butler");
  assert.deepEqual(policy.auth.oidc?.roleClaimPath, ["realm_access", "roles"]);
  assert.equal(policy.auth.oidc?.usernameClaim, "email");
  assert.equal(policy.auth.oidc?.refreshIntervalMs, 3_600_000);

  const [app, hashed] = policy.clients;
  assert.deepEqual({ ...app, denyPromptPatterns: undefined }, {
    name: "app",
    keySha256: KEY_DIGEST,
    requireUserAuth: true,
    origin: "clients[0]",
    allowModels: ["llama3.2", "qwen2.5:7b"],
    denyModels: ["gpt-oss"],
    rateLimit: { count: 10, periodMs: 60_000, text: "10/min" },
    maxRequestBytes: 1000,
    maxCtx: 4096,
    maxPredict: undefined,
    maxConcurrent: 2,
    maxKeepAliveSeconds: 300,
    maxTokensPerDay: 5000,
    denyPromptPatterns: undefined,
    capMode: "clamp",
    allowContext: true,
    allowManagement: true,
  });
  assert.deepEqual(
    app.denyPromptPatterns.map((p) => [p.index, p.source]),
    [[0, "(?i)\\bignore\\b"], [1, "[[:digit:]]{16}"]],
  );
  assert.equal(app.denyPromptPatterns[0].test("Please IGNORE this"), true);
  assert.equal(app.denyPromptPatterns[0].test("ignored"), false);
  assert.equal(app.denyPromptPatterns[1].test("card 4111111111111111"), true);
  assert.equal(hashed.keySha256, "ab".repeat(32));
  assert.equal(hashed.maxKeepAliveSeconds, 3600);
  assert.equal(hashed.capMode, "refuse");
  assert.equal(hashed.allowManagement, false);
  assert.deepEqual(hashed.allowModels, []);

  assert.equal(policy.users[0].name, "alice");
  assert.equal(policy.users[0].passwordHash, BCRYPT);
  assert.equal(policy.users[0].rateLimit, undefined);
  assert.equal(policy.users[0].origin, "users[0]");
  assert.deepEqual([...policy.rolePolicies.keys()], ["admin"]);
  assert.equal(
    policy.rolePolicies.get("admin")?.origin,
    "role_policies.admin",
  );
  assert.equal(policy.userOverrides.get("bob")?.maxCtx, 2048);
  assert.equal(policy.userOverrides.get("bob")?.origin, "user_overrides.bob");

  assert.equal(policy.enableAccountRoutes, true);
  assert.equal(policy.enableExperimentalRoutes, true);
  assert.equal(policy.metricsBearer, BEARER);
  assert.deepEqual(policy.tls, { certPath: "/c.pem", keyPath: "/k.pem" });
  assert.deepEqual(policy.corsAllowOrigins, [
    "https://app.example.com",
    "http://localhost:3000",
  ]);
  assert.equal(policy.stateFile, "/var/lib/butler/state.json");
  assert.equal(policy.budgetTimezone, "Europe/Paris");
  assert.equal(policy.shutdownGraceMs, 0);

  assert.ok(!JSON.stringify(policy).includes(KEY), "plain key kept");
});

Deno.test("defaults fill a minimal config", async () => {
  const policy = await compile(yaml(...MINIMAL));

  assert.deepEqual(policy.listen, { hostname: "127.0.0.1", port: 8080 });
  assert.equal(policy.upstream.origin, "http://127.0.0.1:11434");
  assert.equal(policy.upstreamTimeoutMs, 600_000);
  assert.equal(policy.auth.mode, "api_key");
  assert.equal(policy.auth.jwtSecret, undefined);
  assert.equal(policy.auth.tokenExpiryMs, 86_400_000);
  assert.equal(policy.logPrompts, false);
  assert.equal(policy.budgetTimezone, "UTC");
  assert.equal(policy.shutdownGraceMs, 30_000);
  assert.deepEqual(policy.corsAllowOrigins, []);
  assert.deepEqual(policy.envVars, []);
  assert.equal(policy.clients[0].keySha256, KEY_DIGEST);
});

Deno.test("the policy is deeply frozen", async () => {
  const policy = await compile(
    yaml(
      ...MINIMAL,
      "role_policies: {admin: {allow_models: ['*']}}",
      "auth: {jwt_secret: '${JWT}'}",
    ),
    { JWT: JWT_SECRET },
  );
  const writable = policy as unknown as {
    clients: { name: string; allowModels: string[] }[];
    listen: { port: number };
  };

  assert.throws(() => {
    writable.clients[0].name = "other";
  }, TypeError);
  assert.throws(() => writable.clients[0].allowModels.push("x"), TypeError);
  assert.throws(() => {
    writable.listen.port = 1;
  }, TypeError);
  assert.throws(() => {
    (policy.rolePolicies as Map<string, unknown>).set("x", {});
  }, TypeError);
  assert.throws(() => {
    (policy.rolePolicies as Map<string, unknown>).delete("admin");
  }, TypeError);
  assert.throws(() => {
    policy.upstream.pathname = "/evil";
  }, TypeError);
  policy.upstream.searchParams.set("a", "b");
  assert.equal(policy.upstream.href, "http://127.0.0.1:11434/");

  const secret = policy.auth.jwtSecret!;
  secret[0] = 0;
  assert.equal(policy.auth.jwtSecret![0], JWT_SECRET.charCodeAt(0));
});

Deno.test("an unset variable is named with the field and line", async () => {
  const lines = await errorLines(yaml(
    "upstream: http://127.0.0.1:11434",
    "clients:",
    "  - name: local",
    "    key: ${BUTLER_KEY}",
  ));
  assert.deepEqual(lines, [
    "butler.yaml:4: clients[0].key: environment variable BUTLER_KEY is not set",
  ]);
});

Deno.test("a variable the process may not read is reported", async () => {
  const error = await compilePolicy(yaml(...MINIMAL, "state_file: ${HOME}"), {
    path: "butler.yaml",
    env: () => {
      throw new Error('Requires env access to "HOME"');
    },
  }).catch((caught) => caught);
  assert.ok(error instanceof ConfigError);
  assert.equal(
    error.message,
    "butler.yaml:5: state_file: environment variable HOME cannot be read: " +
      'Requires env access to "HOME"',
  );
});

Deno.test("expansion happens inside values and cannot add YAML", async () => {
  const policy = await compile(
    yaml(
      "upstream: http://127.0.0.1:11434",
      "state_file: '$${DIR}/$HOME/${DIR}${FILE}$'",
      "clients:",
      "  - name: ${NAME}",
      `    key: ${KEY}`,
      "    max_ctx: ${CTX}",
      "    allow_context: ${YES}",
    ),
    {
      DIR: "/d",
      FILE: "/f",
      NAME: "x\n    allow_management: true",
      CTX: "4096",
      YES: "true",
    },
  );
  assert.equal(policy.stateFile, "$/d/$HOME//d/f$");
  assert.equal(policy.clients[0].name, "x\n    allow_management: true");
  assert.equal(policy.clients[0].allowManagement, false);
  assert.equal(policy.clients[0].maxCtx, 4096);
  assert.equal(policy.clients[0].allowContext, true);
  assert.deepEqual(policy.envVars, ["CTX", "DIR", "FILE", "NAME", "YES"]);

  // A quoted reference stays a string, as it would in YAML.
  const lines = await errorLines(
    yaml(...MINIMAL, "    max_ctx: '${CTX}'"),
    { CTX: "4096" },
  );
  assert.deepEqual(lines, [
    'butler.yaml:5: clients[0].max_ctx: expected a non-negative integer, got "4096"',
  ]);
});

Deno.test("a short key is refused without printing it", async () => {
  const lines = await errorLines(yaml(
    "upstream: http://127.0.0.1:11434",
    "clients:",
    "  - name: local",
    "    key: sh0rtkey",
  ));
  assert.deepEqual(lines, [
    "butler.yaml:4: clients[0].key: <redacted> (8 characters) is too short; " +
    "use at least 16 characters, e.g. from `butler gen-key`",
  ]);
});

Deno.test("a client needs exactly one of key and key_sha256", async () => {
  const lines = await errorLines(yaml(
    "upstream: http://127.0.0.1:11434",
    "clients:",
    "  - name: both",
    `    key: ${KEY}`,
    `    key_sha256: ${KEY_DIGEST}`,
    "  - name: neither",
    "  - name: bad-digest",
    "    key_sha256: abc",
  ));
  assert.deepEqual(lines, [
    `butler.yaml:3: clients[0]: has both "key" and "key_sha256"; keep exactly one of them`,
    `butler.yaml:6: clients[1]: needs "key" or "key_sha256"`,
    "butler.yaml:8: clients[2].key_sha256: <redacted> (3 characters) is not " +
    "a SHA-256 digest; write 64 hex digits",
  ]);
});

Deno.test("two clients cannot share a key, however written", async () => {
  const lines = await errorLines(yaml(
    "upstream: http://127.0.0.1:11434",
    "clients:",
    "  - name: a",
    `    key: ${KEY}`,
    "  - name: b",
    `    key: ${KEY}`,
    "  - name: c",
    `    key_sha256: ${KEY_DIGEST.toUpperCase()}`,
    "  - name: d",
    `    key: ${OTHER_KEY}`,
  ));
  assert.deepEqual(lines, [
    "butler.yaml:6: clients[1].key: same key as clients[0]; every client needs its own key",
    "butler.yaml:8: clients[2].key_sha256: same key as clients[0]; every client needs its own key",
  ]);
});

Deno.test("client and user names are unique", async () => {
  const lines = await errorLines(
    yaml(
      "upstream: http://127.0.0.1:11434",
      "auth: {mode: either, jwt_secret: '${JWT}'}",
      "clients:",
      "  - name: app",
      `    key: ${KEY}`,
      "  - name: app",
      `    key: ${OTHER_KEY}`,
      "  - key: 0123456789abcdefXX",
      "users:",
      "  - {name: alice, password_hash: '" + BCRYPT + "'}",
      "  - {name: alice, password_hash: '" + BCRYPT + "'}",
    ),
    { JWT: JWT_SECRET },
  );
  assert.deepEqual(lines, [
    'butler.yaml:6: clients[1].name: "app" is already the name of clients[0]',
    "butler.yaml:8: clients[2].name: required field is missing",
    'butler.yaml:11: users[1].name: "alice" is already the name of users[0]',
  ]);
});

Deno.test("unknown fields are named with a hint", async () => {
  const lines = await errorLines(yaml(
    ...MINIMAL,
    "    rate_limt: 10/min",
    "    Allow_Models: ['*']",
    "    colour: blue",
    "mode: jwt_standalone",
    "auth:",
    "  issuer: https://idp.example.com",
    "upstreem: x",
  ));
  assert.deepEqual(lines, [
    'butler.yaml:5: clients[0].rate_limt: unknown field "rate_limt"; did you mean "rate_limit"?',
    'butler.yaml:6: clients[0].Allow_Models: unknown field "Allow_Models"; did you mean "allow_models"?',
    'butler.yaml:7: clients[0].colour: unknown field "colour"',
    'butler.yaml:8: mode: unknown field "mode"; it belongs under "auth"',
    'butler.yaml:10: auth.issuer: unknown field "issuer"; it belongs under "auth.oidc"',
    'butler.yaml:11: upstreem: unknown field "upstreem"; did you mean "upstream"?',
  ]);
});

Deno.test("fields of the top level or auth placed in a client, user or role say where they belong", async () => {
  const lines = await errorLines(yaml(
    ...MINIMAL,
    "    listen: 127.0.0.1:9000",
    "    jwt_secret: x",
    "users:",
    "  - name: alice",
    "    password_hash: x",
    "    upstream: http://127.0.0.1:1",
    "role_policies:",
    "  admin:",
    "    mode: api_key",
  ));
  assert.deepEqual(lines.filter((line) => line.includes("unknown field")), [
    'butler.yaml:5: clients[0].listen: unknown field "listen"; it belongs at the top level',
    'butler.yaml:6: clients[0].jwt_secret: unknown field "jwt_secret"; it belongs under "auth"',
    'butler.yaml:10: users[0].upstream: unknown field "upstream"; it belongs at the top level',
    'butler.yaml:13: role_policies.admin.mode: unknown field "mode"; it belongs under "auth"',
  ]);
});

Deno.test("a broken clients list is not also reported as missing", async () => {
  const asMap = await errorLines(yaml(
    "upstream: http://127.0.0.1:11434",
    "clients:",
    "  local: {}",
  ));
  assert.deepEqual(asMap, [
    "butler.yaml:3: clients: expected a list, got a map",
  ]);

  const bomb = await errorLines(yaml(
    "upstream: http://127.0.0.1:11434",
    "a: &a [x, x, x, x, x, x, x, x, x, x]",
    "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]",
    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]",
    "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]",
    "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]",
    "clients: [*e, *e]",
  ));
  assert.ok(
    bomb.some((line) => line.includes("expands to more than 100000 values")),
    bomb.join("\n"),
  );
  assert.ok(
    !bomb.some((line) => line.includes("needs at least one client")),
    bomb.join("\n"),
  );
});

Deno.test("a second YAML document is named as such", async () => {
  const lines = await errorLines(yaml(...MINIMAL, "---", "listen: x"));
  assert.deepEqual(lines, [
    "butler.yaml:5: YAML: a second document starts here (---); the config " +
    "is one document, so remove the separator and what follows or merge it " +
    "into the first",
  ]);
});

Deno.test("wrong types name the expected type and the value", async () => {
  const lines = await errorLines(yaml(
    ...MINIMAL,
    "    allow_models: '*'",
    "    max_ctx: -1",
    "    max_predict: 1.5",
    "    deny_models: [1]",
    "    cap_mode: cut",
    "log_prompts: 'yes'",
    "listen: 8080",
    "role_policies:",
    "  admin:",
  ));
  assert.deepEqual(lines, [
    'butler.yaml:5: clients[0].allow_models: expected a list, got "*"',
    "butler.yaml:6: clients[0].max_ctx: expected a non-negative integer, got -1",
    "butler.yaml:7: clients[0].max_predict: expected a non-negative integer, got 1.5",
    "butler.yaml:8: clients[0].deny_models[0]: expected a string, got 1",
    'butler.yaml:9: clients[0].cap_mode: "cut" is not a cap mode; write "refuse" or "clamp"',
    'butler.yaml:10: log_prompts: expected a boolean (true or false), got "yes"',
    "butler.yaml:11: listen: expected a string, got 8080 (put it in quotes)",
    "butler.yaml:13: role_policies.admin: expected a map of policy fields (use {} for none), got null",
  ]);
});

Deno.test("model patterns are checked", async () => {
  const lines = await errorLines(yaml(
    ...MINIMAL,
    "    allow_models: ['  ', 'llama 3', 'a@b@c', 'llama*', ' ok ']",
  ));
  assert.deepEqual(lines, [
    'butler.yaml:5: clients[0].allow_models[0]: "  " is not a model pattern: model "": a model name is required',
    'butler.yaml:5: clients[0].allow_models[1]: "llama 3" is not a model pattern: model "llama 3": the model "llama 3" is invalid; use ASCII letters, digits, "_" and "-" or ".", starting with a letter, digit or "_"',
    'butler.yaml:5: clients[0].allow_models[2]: "a@b@c" is not a model pattern: model "a@b@c": digests (@…) are not accepted; Ollama does not read them',
    'butler.yaml:5: clients[0].allow_models[3]: "llama*" is not a model pattern: model "llama*": only "*" alone is a wildcard; name a model, with or without a tag',
  ]);
});

Deno.test("a bad rate names the rule", async () => {
  const lines = await errorLines(yaml(
    "upstream: http://127.0.0.1:11434",
    "global_rate_limit: 0/min",
    "clients:",
    "  - name: a",
    `    key: ${KEY}`,
    "  - name: b",
    `    key: ${OTHER_KEY}`,
    "  - name: c",
    "    key: 0123456789abcdefXX",
    "    rate_limit: 10/mn",
  ));
  assert.deepEqual(lines, [
    'butler.yaml:2: global_rate_limit: "0/min" is not a rate; the count must ' +
    'be a positive integer (write "unlimited" for no limit)',
    'butler.yaml:10: clients[2].rate_limit: "10/mn" is not a rate; write ' +
    '<count>/<sec|min|hour|day> or "unlimited"',
  ]);
});

Deno.test("a bad prompt pattern gives re2js's reason", async () => {
  const lines = await errorLines(yaml(
    ...MINIMAL,
    "    deny_prompt_patterns:",
    "      - ok",
    "      - '(unclosed'",
    "      - '(?<=behind)x'",
  ));
  assert.deepEqual(lines, [
    'butler.yaml:7: clients[0].deny_prompt_patterns[1]: "(unclosed" is not ' +
    "an RE2 pattern: error parsing regexp: missing closing ): `(unclosed`",
    'butler.yaml:8: clients[0].deny_prompt_patterns[2]: "(?<=behind)x" is ' +
    "not an RE2 pattern: error parsing regexp: invalid named capture: " +
    "`(?<=behind)x`",
  ]);
});

Deno.test("bad durations name the rule", async () => {
  const lines = await errorLines(yaml(
    ...MINIMAL,
    "    max_keep_alive: 1500ms",
    "upstream_timeout: 10 minutes",
    "shutdown_grace: 30",
    "auth: {token_expiry: 0}",
  ));
  assert.deepEqual(lines, [
    'butler.yaml:5: clients[0].max_keep_alive: "1500ms" is not a whole number of seconds',
    'butler.yaml:6: upstream_timeout: "10 minutes" is not a duration; write ' +
    'a number and a unit (ms, s, m, h or d), e.g. "500ms", "30s", "24h", "7d"',
    'butler.yaml:7: shutdown_grace: 30 has no unit; write e.g. "30s" or "30m"',
    "butler.yaml:8: auth.token_expiry: must be longer than 0",
  ]);
});

Deno.test("each auth mode names the piece it is missing", async () => {
  const upstream = "upstream: http://127.0.0.1:11434";

  assert.deepEqual(await errorLines(yaml(upstream)), [
    'butler.yaml: clients: auth.mode "api_key" (the default) needs at least one client',
  ]);
  assert.deepEqual(
    await errorLines(yaml(upstream, "auth: {mode: jwt_standalone}")),
    [
      'butler.yaml:2: users: auth.mode "jwt_standalone" needs at least one user',
      'butler.yaml:2: auth.jwt_secret: auth.mode "jwt_standalone" needs a jwt_secret',
    ],
  );
  assert.deepEqual(await errorLines(yaml(upstream, "auth:", "  mode: oidc")), [
    'butler.yaml:3: auth.oidc: auth.mode "oidc" needs auth.oidc with issuer, client_id and role_claim_path',
    'butler.yaml:3: role_policies: auth.mode "oidc" needs at least one role policy',
  ]);
  assert.deepEqual(
    await errorLines(yaml(
      upstream,
      "auth:",
      "  mode: oidc",
      "  oidc: {issuer: 'https://idp.example.com'}",
      "role_policies: {staff: {}}",
    )),
    [
      "butler.yaml:4: auth.oidc.client_id: required field is missing",
      "butler.yaml:4: auth.oidc.role_claim_path: required field is missing",
    ],
  );
  assert.deepEqual(await errorLines(yaml(upstream, "auth: {mode: either}")), [
    'butler.yaml:2: auth: auth.mode "either" needs at least one of clients, users or auth.oidc',
  ]);
  assert.deepEqual(
    await errorLines(yaml(
      upstream,
      "auth: {mode: either}",
      `users: [{name: a, password_hash: '${BCRYPT}'}]`,
    )),
    [
      'butler.yaml:2: auth.jwt_secret: auth.mode "either" needs a jwt_secret when users are listed',
    ],
  );
  assert.deepEqual(await errorLines(yaml(upstream, "auth: {mode: magic}")), [
    'butler.yaml:2: auth.mode: "magic" is not an auth mode; write one of ' +
    '"api_key", "jwt_standalone", "oidc", "either"',
    'butler.yaml:2: clients: auth.mode "api_key" needs at least one client',
  ]);
  assert.deepEqual(
    await errorLines(yaml(...MINIMAL, "    require_user_auth: true")),
    [
      "butler.yaml:5: clients[0].require_user_auth: needs a way to sign users " +
      'in, which auth.mode "api_key" has not: use auth.mode "either" with ' +
      "users and auth.jwt_secret, or with auth.oidc",
    ],
  );
  // Users and a secret are there, but api_key mode never takes their tokens.
  assert.deepEqual(
    await errorLines(yaml(
      ...MINIMAL,
      "    require_user_auth: true",
      "auth:",
      "  jwt_secret: " + "s".repeat(32),
      "users:",
      "  - name: alice",
      "    password_hash: " + "$2b$04$" + "a".repeat(53),
    )),
    [
      "butler.yaml:5: clients[0].require_user_auth: needs a way to sign users " +
      'in, which auth.mode "api_key" has not: use auth.mode "either" with ' +
      "users and auth.jwt_secret, or with auth.oidc",
    ],
  );
});

Deno.test("parts the auth mode never uses are warned about, not refused", async () => {
  const keysUnused = await compile(yaml(
    "upstream: http://127.0.0.1:11434",
    "auth:",
    "  mode: jwt_standalone",
    "  jwt_secret: " + "s".repeat(32),
    "users:",
    "  - name: alice",
    "    password_hash: " + "$2b$04$" + "a".repeat(53),
    "clients:",
    "  - name: local",
    `    key: ${KEY}`,
  ));
  assert.deepEqual(keysUnused.warnings, [
    'clients are unused: auth.mode "jwt_standalone" does not accept them; ' +
    'use auth.mode "either" to accept every kind of credential',
  ]);

  const usersUnused = await compile(yaml(
    ...MINIMAL,
    "auth:",
    "  jwt_secret: " + "s".repeat(32),
    "users:",
    "  - name: alice",
    "    password_hash: " + "$2b$04$" + "a".repeat(53),
  ));
  assert.deepEqual(usersUnused.warnings, [
    'users are unused: auth.mode "api_key" does not accept them; ' +
    'use auth.mode "either" to accept every kind of credential',
  ]);
  const rolesUnused = await compile(yaml(
    ...MINIMAL,
    "role_policies:",
    "  staff: {allow_models: ['*']}",
    "user_overrides:",
    "  alice: {allow_models: ['*']}",
  ));
  assert.deepEqual(rolesUnused.warnings, [
    'role_policies are unused: auth.mode "api_key" does not accept them; ' +
    'use auth.mode "either" to accept every kind of credential',
    'user_overrides are unused: auth.mode "api_key" does not accept them; ' +
    'use auth.mode "either" to accept every kind of credential',
  ]);
  assert.deepEqual((await compile(yaml(...MINIMAL))).warnings, []);

  const costly = await compile(yaml(
    ...MINIMAL,
    "auth:",
    "  mode: either",
    "  jwt_secret: " + "s".repeat(32),
    "users:",
    "  - name: alice",
    "    password_hash: " + "$2b$16$" + "a".repeat(53),
    "  - name: bob",
    "    password_hash: " + "$2b$12$" + "a".repeat(53),
  ));
  assert.equal(costly.warnings.length, 1);
  assert.match(
    costly.warnings[0],
    /^users "alice": bcrypt cost 16 makes every login take about 4 s/,
  );
  // `check` prints them.
  assert.match(
    describePolicy(keysUnused),
    /^warning: clients are unused: auth\.mode "jwt_standalone"/m,
  );
});

Deno.test("check quotes names that would break or forge its report lines", async () => {
  const policy = await compile(yaml(
    "upstream: http://127.0.0.1:11434",
    "clients:",
    '  - name: "app\\nclient evil:"',
    `    key: ${KEY}`,
    "  - name: plain",
    `    key: ${OTHER_KEY}`,
  ));
  const report = describePolicy(policy);
  assert.match(report, /^client "app\\nclient evil:":$/m);
  assert.match(report, /^client plain:$/m);
  assert.doesNotMatch(report, /^client evil:/m);
});

Deno.test("a bad upstream is refused", async () => {
  for (
    const [value, message] of [
      [
        "ftp://h",
        '"ftp://h" is not an upstream URL; write http(s)://host[:port]',
      ],
      [
        "127.0.0.1:11434",
        '"127.0.0.1:11434" is not an upstream URL; write http(s)://host[:port]',
      ],
      [
        "http://h:1/api",
        '"http://h:1/api" has a path (/api); write the server\'s base URL only, e.g. "http://127.0.0.1:11434"',
      ],
      [
        "http://h:1/?x=1",
        '"http://h:1/?x=1" must not have a query or fragment',
      ],
      ["http://h:1/#", '"http://h:1/#" must not have a query or fragment'],
      [
        "http://u:p@h:1",
        "the upstream URL must not contain a user name or password",
      ],
    ]
  ) {
    const lines = await errorLines(
      yaml(`upstream: '${value}'`, ...MINIMAL.slice(1)),
    );
    assert.deepEqual(lines, [`butler.yaml:1: upstream: ${message}`]);
  }
  assert.deepEqual(await errorLines(yaml(...MINIMAL.slice(1))), [
    "butler.yaml:1: upstream: required field is missing",
  ]);
});

Deno.test("a bad listen address is refused", async () => {
  const rule = 'write host:port, e.g. "127.0.0.1:8080" or "[::1]:8080"';
  for (
    const [value, message] of [
      ["localhost", `"localhost" is not a listen address; ${rule}`],
      [":8080", `":8080" is not a listen address; ${rule}`],
      ["::1:8080", `"::1:8080" is not a listen address; ${rule}`],
      [
        "127.0.0.1:70000",
        '"127.0.0.1:70000" is not a listen address: port 70000 is above 65535',
      ],
      [
        "[::1::2]:80",
        '"[::1::2]:80" is not a listen address: "::1::2" is not an IPv6 address',
      ],
    ]
  ) {
    const lines = await errorLines(yaml(...MINIMAL, `listen: '${value}'`));
    assert.deepEqual(lines, [`butler.yaml:5: listen: ${message}`]);
  }
  const policy = await compile(yaml(...MINIMAL, "listen: localhost:0"));
  assert.deepEqual(policy.listen, { hostname: "localhost", port: 0 });
});

Deno.test("an OIDC issuer must be https unless on loopback", async () => {
  const config = (issuer: string) =>
    yaml(
      "upstream: http://127.0.0.1:11434",
      "auth:",
      "  mode: oidc",
      "  oidc:",
      `    issuer: '${issuer}'`,
      "    client_id: butler",
      "    role_claim_path: roles",
      "role_policies: {staff: {}}",
    );

  assert.deepEqual(await errorLines(config("http://idp.example.com")), [
    'butler.yaml:5: auth.oidc.issuer: "http://idp.example.com" is not https; ' +
    "an OIDC issuer must use https (plain http is accepted only for " +
    "localhost, 127.0.0.0/8 and ::1)",
  ]);
  assert.equal(
    (await errorLines(config("http://10.0.0.1:8080"))).length,
    1,
  );
  for (
    const issuer of [
      "https://idp.example.com/realms/x",
      "http://localhost:8180",
      "http://127.0.0.2:9000",
      "http://[::1]:9000",
    ]
  ) {
    const policy = await compile(config(issuer));
    assert.equal(policy.auth.oidc?.issuer.href.startsWith(issuer), true);
  }
});

Deno.test("other top-level fields are checked", async () => {
  const lines = await errorLines(yaml(
    ...MINIMAL,
    "cors:",
    "  allow_origins: ['*', 'https://a.example/app', 'https://b.example']",
    "budget_timezone: Mars/Olympus",
    "tls: {cert: /c.pem}",
    "global_max_concurrent: -2",
  ));
  assert.deepEqual(lines, [
    'butler.yaml:6: cors.allow_origins[0]: "*" is not allowed: requests to ' +
    "Butler carry credentials, so list each origin as scheme://host[:port]",
    'butler.yaml:6: cors.allow_origins[1]: "https://a.example/app" is not an ' +
    "origin: it has a path; write scheme://host[:port]",
    'butler.yaml:7: budget_timezone: "Mars/Olympus" is not an IANA time ' +
    'zone name; write e.g. "UTC" or "Europe/Paris"',
    "butler.yaml:8: tls.key: required field is missing",
    "butler.yaml:9: global_max_concurrent: expected a non-negative integer, got -2",
  ]);
});

Deno.test("a password hash must look like bcrypt", async () => {
  for (
    const hash of [
      "plaintext",
      BCRYPT.replace("$2b$04$", "$2x$04$"),
      BCRYPT.replace("$2b$04$", "$2b$03$"),
      BCRYPT.replace("$2b$04$", "$2b$32$"),
      BCRYPT.slice(0, -1),
    ]
  ) {
    const lines = await errorLines(
      yaml(
        "upstream: http://127.0.0.1:11434",
        "auth: {mode: jwt_standalone, jwt_secret: '${JWT}'}",
        "users:",
        "  - name: alice",
        `    password_hash: '${hash}'`,
      ),
      { JWT: JWT_SECRET },
    );
    assert.deepEqual(lines, [
      `butler.yaml:5: users[0].password_hash: <redacted> (${hash.length} ` +
      "characters) is not a bcrypt hash ($2a$, $2b$ or $2y$, cost 04-31); " +
      "make one with `butler hash-password`",
    ]);
  }
  for (const prefix of ["$2a$", "$2y$"]) {
    const hash = BCRYPT.replace("$2b$", prefix).replace("$04$", "$31$");
    const policy = await compile(
      yaml(
        "upstream: http://127.0.0.1:11434",
        "auth: {mode: jwt_standalone, jwt_secret: '${JWT}'}",
        `users: [{name: a, password_hash: '${hash}'}]`,
      ),
      { JWT: JWT_SECRET },
    );
    assert.equal(policy.users[0].passwordHash, hash);
  }
});

Deno.test("secrets never appear in messages", async () => {
  const secrets = {
    KEY: "short-key-1",
    DIGEST: "d1g3st".repeat(10),
    JWT: "tiny-jwt-secret",
    BEARER: "bearer-12",
    HASH: "$2b$10$notquitebcrypt",
  };
  const lines = await errorLines(
    yaml(
      "upstream: http://127.0.0.1:11434",
      "auth:",
      "  mode: either",
      "  jwt_secret: ${JWT}",
      "metrics:",
      "  bearer: ${BEARER}",
      "clients:",
      "  - name: a",
      "    key: ${KEY}",
      "  - name: b",
      "    key_sha256: ${DIGEST}",
      "  - name: c",
      "    key: 12345678901234567890",
      "users:",
      "  - name: u",
      "    password_hash: ${HASH}",
    ),
    secrets,
  );
  assert.deepEqual(lines, [
    "butler.yaml:4: auth.jwt_secret: <redacted> (15 bytes) is too short; " +
    "use at least 32 bytes, e.g. from `butler gen-key`",
    "butler.yaml:6: metrics.bearer: <redacted> (9 characters) is too short; " +
    "use at least 16 characters",
    "butler.yaml:9: clients[0].key: <redacted> (11 characters) is too short; " +
    "use at least 16 characters, e.g. from `butler gen-key`",
    "butler.yaml:11: clients[1].key_sha256: <redacted> (60 characters) is " +
    "not a SHA-256 digest; write 64 hex digits",
    "butler.yaml:13: clients[2].key: expected a string, got <redacted> " +
    "(a number) (put it in quotes)",
    "butler.yaml:16: users[0].password_hash: <redacted> (21 characters) is " +
    "not a bcrypt hash ($2a$, $2b$ or $2y$, cost 04-31); make one with " +
    "`butler hash-password`",
  ]);
});

Deno.test("a YAML syntax error does not quote the secret it is on", async () => {
  const lines = await errorLines(yaml(
    "upstream: http://127.0.0.1:11434",
    "clients:",
    "  - name: a",
    "    key: 'sup3r-s3cret-k3y-value' trailing",
  ));
  assert.equal(lines.length, 1);
  assert.match(lines[0], /^butler\.yaml:4: YAML: /);
  assert.ok(!lines[0].includes("sup3r"), lines[0]);
  assert.ok(!lines[0].includes("trailing"), lines[0]);
});

Deno.test("every problem is reported at once, in line order", async () => {
  const error = await compile(yaml(
    "listen: nowhere",
    "upstream: http://127.0.0.1:11434/v1",
    "clients:",
    "  - name: a",
    "    key: ${MISSING}",
    "    rate_limit: fast",
    "shutdown_grace: soon",
  )).catch((caught) => caught);
  assert.ok(error instanceof ConfigError);
  assert.deepEqual(error.issues.map((issue) => [issue.line, issue.path]), [
    [1, "listen"],
    [2, "upstream"],
    [5, "clients[0].key"],
    [6, "clients[0].rate_limit"],
    [7, "shutdown_grace"],
  ]);
});

Deno.test("YAML problems are reported with their line", async () => {
  assert.deepEqual(
    await errorLines(yaml(...MINIMAL, "upstream: http://other")),
    ["butler.yaml:5: YAML: Map keys must be unique"],
  );
  const broken = await errorLines(yaml(...MINIMAL, "cors: [a, b"));
  assert.equal(broken.length >= 1, true);
  assert.match(broken[0], /^butler\.yaml:6: YAML: Flow sequence/);
  assert.deepEqual(await errorLines(""), [
    "butler.yaml: the file is empty; `upstream` is required",
  ]);
  assert.deepEqual(await errorLines("- a\n"), [
    "butler.yaml:1: expected a map of fields at the top level, got a list",
  ]);
});

Deno.test("YAML anchors and merge keys work; loops do not", async () => {
  const policy = await compile(yaml(
    "upstream: http://127.0.0.1:11434",
    "clients:",
    "  - &base",
    "    name: a",
    `    key: ${KEY}`,
    "    allow_models: &models [llama3.2]",
    "    max_ctx: 1024",
    "  - <<: *base",
    "    name: b",
    `    key: ${OTHER_KEY}`,
    "    deny_models: *models",
  ));
  assert.equal(policy.clients[1].name, "b");
  assert.equal(policy.clients[1].maxCtx, 1024);
  assert.deepEqual(policy.clients[1].allowModels, ["llama3.2"]);
  assert.deepEqual(policy.clients[1].denyModels, ["llama3.2"]);

  const lines = await errorLines(yaml(...MINIMAL, "    allow_models: &l [*l]"));
  assert.deepEqual(lines, [
    "butler.yaml:5: clients[0].allow_models[0]: alias *l refers to itself or to nothing",
  ]);
});

Deno.test("the shipped butler.yaml compiles with BUTLER_KEY set", async () => {
  const path = new URL("../butler.yaml", import.meta.url).pathname;
  const policy = await loadPolicy(path, {
    env: envOf({ BUTLER_KEY: "a-key-of-twenty-chars" }),
  });
  assert.equal(policy.configPath, path);
  assert.deepEqual(policy.envVars, ["BUTLER_KEY"]);
  assert.deepEqual(policy.listen, { hostname: "127.0.0.1", port: 8080 });
  assert.equal(policy.upstream.origin, "http://127.0.0.1:11434");
  assert.equal(policy.clients[0].name, "local");
  assert.deepEqual(policy.clients[0].allowModels, ["*"]);

  const error = await loadPolicy(path, { env: envOf({}) }).catch((e) => e);
  assert.ok(error instanceof ConfigError);
  assert.equal(error.issues.length, 1);
  assert.equal(error.issues[0].path, "clients[0].key");
  assert.match(error.message, /environment variable BUTLER_KEY is not set$/);
});

Deno.test("the shipped butler.example.yaml compiles", async () => {
  const path = new URL("../butler.example.yaml", import.meta.url).pathname;
  const policy = await loadPolicy(path, {
    env: envOf({
      BUTLER_JWT_SECRET: JWT_SECRET,
      LAPTOP_KEY: KEY,
      BUTLER_METRICS_BEARER: BEARER,
    }),
  });
  assert.equal(policy.auth.mode, "either");
  assert.equal(policy.clients.length, 2);
});

Deno.test("a missing file is a ConfigError naming the file", async () => {
  const error = await loadPolicy("/nonexistent/butler.yaml").catch((e) => e);
  assert.ok(error instanceof ConfigError);
  assert.match(
    error.message,
    /^\/nonexistent\/butler\.yaml: cannot read the config file: /,
  );
});
