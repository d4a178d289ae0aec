import assert from "node:assert/strict";
import { base64url, exportSPKI, importJWK, SignJWT } from "jose";
import type { OidcSettings } from "../src/config/policy.ts";
import {
  looksLikeJwt,
  OidcState,
  OidcVerifier,
  type OidcVerifierOptions,
} from "../src/auth/oidc.ts";
import { type OidcSim, startOidcSim } from "./sim/oidc_sim.ts";

function settingsFor(
  sim: OidcSim,
  overrides: Partial<OidcSettings> = {},
): OidcSettings {
  return {
    issuer: new URL(sim.issuer),
    clientId: sim.audience,
    roleClaimPath: ["realm_access", "roles"],
    refreshIntervalMs: 3_600_000,
    ...overrides,
  };
}

async function waitForState(
  verifier: OidcVerifier,
  state: OidcState,
): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (verifier.state !== state) {
    if (Date.now() > deadline) {
      throw new Error(
        `state stayed ${verifier.state} (${verifier.lastError}), wanted ${state}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

async function waitFor(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** A started simulator and a ready verifier; both stopped afterwards. */
async function withReadyVerifier(
  body: (sim: OidcSim, verifier: OidcVerifier) => Promise<void>,
  options: {
    sim?: Parameters<typeof startOidcSim>[0];
    settings?: Partial<OidcSettings>;
    verifier?: OidcVerifierOptions;
  } = {},
): Promise<void> {
  const sim = await startOidcSim(options.sim);
  const verifier = new OidcVerifier(
    settingsFor(sim, options.settings),
    options.verifier,
  );
  try {
    verifier.start();
    await waitForState(verifier, "ready");
    await body(sim, verifier);
  } finally {
    verifier.stop();
    await sim.close();
  }
}

const person = {
  sub: "3f1c",
  preferred_username: "alice",
  realm_access: { roles: ["dev", "reader"] },
};

function jwksFetches(sim: OidcSim): number {
  return sim.requests.filter((path) => path.endsWith("/certs")).length;
}

Deno.test("a valid RS256 token gives the username and roles", async () => {
  await withReadyVerifier(async (sim, verifier) => {
    const result = await verifier.verify(await sim.sign(person));

    assert.ok("username" in result, JSON.stringify(result));
    assert.deepEqual(result.username, "alice");
    assert.deepEqual(result.roles, ["dev", "reader"]);
    assert.deepEqual(result.claims.sub, "3f1c");
  });
});

Deno.test("a valid ES256 token is accepted", async () => {
  await withReadyVerifier(async (sim, verifier) => {
    const result = await verifier.verify(await sim.sign(person));

    assert.ok("username" in result, JSON.stringify(result));
    assert.deepEqual(result.username, "alice");
  }, { sim: { alg: "ES256" } });
});

Deno.test("tokens failing a claim check are refused with the claim's reason", async () => {
  await withReadyVerifier(async (sim, verifier) => {
    const now = Math.floor(Date.now() / 1000);
    const cases: [string, Promise<string>][] = [
      [
        "token_issuer_invalid",
        sim.sign(person, { issuer: "http://127.0.0.1:1/realms/test" }),
      ],
      ["token_audience_invalid", sim.sign(person, { audience: "other-app" })],
      ["token_expired", sim.sign(person, { expiresIn: now - 120 })],
      ["token_not_yet_valid", sim.sign(person, { notBefore: "10m" })],
      [
        "token_algorithm_not_allowed",
        sim.sign(person, { alg: "PS256" }),
      ],
      ["token_key_unknown", sim.sign(person, { key: "unknown" })],
    ];

    for (const [reason, token] of cases) {
      assert.deepEqual(await verifier.verify(await token), { reason }, reason);
    }
  }, { verifier: { keyRefetchCooldownMs: 60_000 } });
});

Deno.test("expiry and not-before have a small clock tolerance", async () => {
  await withReadyVerifier(async (sim, verifier) => {
    const now = Math.floor(Date.now() / 1000);

    const justExpired = await sim.sign(person, { expiresIn: now - 10 });
    const almostValid = await sim.sign(person, { notBefore: now + 10 });

    assert.ok("username" in await verifier.verify(justExpired));
    assert.ok("username" in await verifier.verify(almostValid));
  });
});

Deno.test("a token without exp is refused", async () => {
  await withReadyVerifier(async (sim, verifier) => {
    const token = await sim.sign(person, { omitExpiry: true });

    assert.deepEqual(await verifier.verify(token), {
      reason: "token_claim_invalid",
    });
  });
});

Deno.test("an alg:none token is refused", async () => {
  await withReadyVerifier(async (sim, verifier) => {
    const header = base64url.encode(
      JSON.stringify({ alg: "none", typ: "JWT" }),
    );
    const payload = base64url.encode(JSON.stringify({
      ...person,
      iss: sim.issuer,
      aud: sim.audience,
      exp: Math.floor(Date.now() / 1000) + 300,
    }));
    const token = `${header}.${payload}.`;

    assert.ok(looksLikeJwt(token));
    assert.deepEqual(await verifier.verify(token), {
      reason: "token_algorithm_not_allowed",
    });
  });
});

Deno.test("an HS256 token keyed with the provider's public key is refused", async () => {
  await withReadyVerifier(async (sim, verifier) => {
    const jwk = sim.publicJwk();
    const publicKey = await importJWK(
      { ...jwk, alg: "RS256" },
      "RS256",
      { extractable: true },
    );
    const pem = await exportSPKI(publicKey as CryptoKey);
    const forged = await new SignJWT(person)
      .setProtectedHeader({ alg: "HS256", kid: (jwk as { kid: string }).kid })
      .setIssuer(sim.issuer)
      .setAudience(sim.audience)
      .setExpirationTime("5m")
      .sign(new TextEncoder().encode(pem));

    assert.deepEqual(await verifier.verify(forged), {
      reason: "token_algorithm_not_allowed",
    });
  });
});

Deno.test("an unknown kid refetches keys only after the cooldown", async () => {
  await withReadyVerifier(async (sim, verifier) => {
    const fetchesWhenReady = jwksFetches(sim);
    await sim.rotate();
    const rotated = await sim.sign(person);

    assert.deepEqual(await verifier.verify(rotated), {
      reason: "token_key_unknown",
    });
    assert.deepEqual(jwksFetches(sim), fetchesWhenReady);
  }, { verifier: { keyRefetchCooldownMs: 60_000 } });
});

Deno.test("an unknown kid after rotation refetches keys and is accepted", async () => {
  await withReadyVerifier(async (sim, verifier) => {
    const oldKeyToken = await sim.sign(person);
    const fetchesWhenReady = jwksFetches(sim);

    await sim.rotate();
    const rotated = await sim.sign(person);
    const result = await verifier.verify(rotated);

    assert.ok("username" in result, JSON.stringify(result));
    assert.deepEqual(jwksFetches(sim), fetchesWhenReady + 1);
    // The old key stays published during rotation.
    assert.ok("username" in await verifier.verify(oldKeyToken));
  }, { verifier: { keyRefetchCooldownMs: 0 } });
});

Deno.test("roles: missing claim, space-separated string, wrong type", async () => {
  await withReadyVerifier(async (sim, verifier) => {
    const missing = await verifier.verify(
      await sim.sign({ preferred_username: "bob" }),
    );
    const spaced = await verifier.verify(
      await sim.sign({ sub: "s1", groups: "dev  ops\treaders" }),
    );
    const numeric = await verifier.verify(
      await sim.sign({ sub: "s1", groups: 7 }),
    );

    assert.ok("roles" in missing && "roles" in spaced);
    assert.deepEqual(missing.roles, []);
    assert.deepEqual(spaced.roles, ["dev", "ops", "readers"]);
    assert.deepEqual(numeric, { reason: "token_roles_invalid" });
  }, { settings: { roleClaimPath: ["groups"] } });
});

Deno.test("roles are read only from own properties along the path", async () => {
  await withReadyVerifier(async (sim, verifier) => {
    const result = await verifier.verify(await sim.sign({ sub: "s1" }));

    assert.ok("roles" in result);
    assert.deepEqual(result.roles, []);
  }, { settings: { roleClaimPath: ["toString"] } });
});

Deno.test("username: preferred_username, then sub, or the configured claim", async () => {
  await withReadyVerifier(async (sim, verifier) => {
    const bySub = await verifier.verify(await sim.sign({ sub: "s9" }));

    assert.ok("username" in bySub);
    assert.deepEqual(bySub.username, "s9");
  });

  await withReadyVerifier(async (sim, verifier) => {
    const byEmail = await verifier.verify(
      await sim.sign({ ...person, email: "a@example.org" }),
    );
    const noEmail = await verifier.verify(await sim.sign(person));

    assert.ok("username" in byEmail);
    assert.deepEqual(byEmail.username, "a@example.org");
    assert.deepEqual(noEmail, { reason: "token_username_missing" });
  }, { settings: { usernameClaim: "email" } });
});

Deno.test("provider down at start: discovering, then ready when it is back", async () => {
  const sim = await startOidcSim();
  sim.setDown(true);
  const verifier = new OidcVerifier(settingsFor(sim), {
    initialBackoffMs: 10,
    maxBackoffMs: 40,
  });
  try {
    assert.deepEqual(verifier.state, "disabled");
    verifier.start();
    assert.deepEqual(verifier.state, "discovering");

    await waitFor(() => sim.requests.length >= 3, "three discovery attempts");
    assert.deepEqual(verifier.state, "discovering");
    assert.match(verifier.lastError ?? "", /503/);
    const token = await sim.sign(person);
    assert.deepEqual(await verifier.verify(token), {
      reason: "oidc_unavailable",
    });

    sim.setDown(false);
    await waitForState(verifier, "ready");
    assert.deepEqual(verifier.lastError, undefined);
    assert.ok("username" in await verifier.verify(token));
  } finally {
    verifier.stop();
    await sim.close();
  }
});

Deno.test("provider down after ready: refreshes fail, held keys keep working", async () => {
  await withReadyVerifier(async (sim, verifier) => {
    const token = await sim.sign(person);
    const seen = sim.requests.length;

    sim.setDown(true);
    await waitFor(() => sim.requests.length >= seen + 2, "failed refreshes");

    assert.deepEqual(verifier.state, "ready");
    assert.match(verifier.lastError ?? "", /503/);
    assert.ok("username" in await verifier.verify(token));
  }, {
    settings: { refreshIntervalMs: 10 },
    verifier: { initialBackoffMs: 10, maxBackoffMs: 20 },
  });
});

Deno.test("a discovery issuer other than the configured one fails", async () => {
  const sim = await startOidcSim();
  const configured = sim.issuer.replace("/realms/test", "/realms/other");
  const verifier = new OidcVerifier(
    settingsFor(sim, { issuer: new URL(configured) }),
    { initialBackoffMs: 10_000 },
  );
  try {
    verifier.start();
    await waitForState(verifier, "failed");

    assert.match(verifier.lastError ?? "", /issuer/);
    assert.match(verifier.lastError ?? "", /realms\/other/);
    assert.deepEqual(
      await verifier.verify(await sim.sign(person, { issuer: configured })),
      { reason: "oidc_unavailable" },
    );
    assert.ok(
      sim.requests.includes("/realms/other/.well-known/openid-configuration"),
    );
  } finally {
    verifier.stop();
    await sim.close();
  }
});

/** A fetch that answers discovery with `document` and keys with no keys. */
function fakeProvider(document: Record<string, unknown>): typeof fetch {
  return function (input: RequestInfo | URL): Promise<Response> {
    const url = String(input instanceof Request ? input.url : input);
    if (url.endsWith("/.well-known/openid-configuration")) {
      return Promise.resolve(Response.json(document));
    }
    return Promise.resolve(Response.json({ keys: [] }));
  };
}

Deno.test("discovery documents this Butler cannot use fail with the field named", async () => {
  const issuer = "https://id.example.org/realms/x";
  const cases: [Record<string, unknown>, RegExp][] = [
    [
      {
        issuer,
        jwks_uri: `${issuer}/certs`,
        id_token_signing_alg_values_supported: ["HS256", "none"],
      },
      /id_token_signing_alg_values_supported/,
    ],
    [
      {
        issuer,
        jwks_uri: "http://id.example.org/certs",
        id_token_signing_alg_values_supported: ["RS256"],
      },
      /jwks_uri/,
    ],
  ];

  for (const [document, message] of cases) {
    const verifier = new OidcVerifier({
      issuer: new URL(issuer),
      clientId: "butler",
      roleClaimPath: ["roles"],
      refreshIntervalMs: 3_600_000,
    }, { fetch: fakeProvider(document), initialBackoffMs: 10_000 });
    try {
      verifier.start();
      await waitForState(verifier, "failed");
      assert.match(verifier.lastError ?? "", message);
    } finally {
      verifier.stop();
    }
  }
});

Deno.test("a bare-origin issuer matches with or without the trailing slash", async () => {
  for (const written of ["https://id.example.org", "https://id.example.org/"]) {
    const verifier = new OidcVerifier({
      issuer: new URL("https://id.example.org"),
      clientId: "butler",
      roleClaimPath: ["roles"],
      refreshIntervalMs: 3_600_000,
    }, {
      fetch: fakeProvider({
        issuer: written,
        jwks_uri: "https://id.example.org/certs",
        id_token_signing_alg_values_supported: ["RS256"],
      }),
      initialBackoffMs: 10_000,
    });
    try {
      verifier.start();
      await waitForState(verifier, "ready");
    } finally {
      verifier.stop();
    }
  }
});

Deno.test("stop: tokens are refused and the state is disabled", async () => {
  await withReadyVerifier(async (sim, verifier) => {
    const token = await sim.sign(person);
    verifier.stop();

    assert.deepEqual(verifier.state, "disabled");
    assert.deepEqual(await verifier.verify(token), {
      reason: "oidc_unavailable",
    });
  });
});

Deno.test("looksLikeJwt: three base64url parts", () => {
  const cases: [string, boolean][] = [
    ["eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", true],
    ["eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", true],
    ["bk_live_abcdef0123456789", false],
    ["a.b", false],
    ["a.b.c.d", false],
    [".b.c", false],
    ["a b.c.d", false],
    ["a+b.c.d", false],
  ];
  for (const [value, expected] of cases) {
    assert.deepEqual(looksLikeJwt(value), expected, value);
  }
});
