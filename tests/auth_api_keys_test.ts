import assert from "node:assert/strict";
import type { ClientPolicy } from "../src/config/policy.ts";
import {
  ApiKeyIndex,
  presentedCredential,
  sha256Hex,
} from "../src/auth/api_keys.ts";

async function client(name: string, key: string): Promise<ClientPolicy> {
  return {
    name,
    keySha256: await sha256Hex(key),
    requireUserAuth: false,
    origin: `clients.${name}`,
    allowModels: ["*"],
    denyModels: [],
    denyPromptPatterns: [],
    capMode: "refuse",
    allowContext: false,
    allowManagement: false,
  };
}

Deno.test("sha256Hex gives the lowercase hex digest of the UTF-8 bytes", async () => {
  assert.equal(
    await sha256Hex("abc"),
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
  );
  // U+00E9 is two UTF-8 bytes, C3 A9.
  assert.equal(
    await sha256Hex("\u00e9"),
    "4a99557e4033c3539de2eb65472017cad5f9557f7a0625a09f1c3f6e2ba69c4c",
  );
});

Deno.test("ApiKeyIndex finds the client by key and nothing for other keys", async () => {
  const index = new ApiKeyIndex([
    await client("app", "bk_app_secret"),
    await client("lab", "bk_lab_secret"),
  ]);

  assert.equal((await index.lookup("bk_app_secret"))?.name, "app");
  assert.equal((await index.lookup("bk_lab_secret"))?.name, "lab");
  assert.equal(await index.lookup("bk_app_secre"), undefined);
  assert.equal(await index.lookup("bk_app_secret "), undefined);
  assert.equal(await index.lookup(""), undefined);
});

Deno.test("ApiKeyIndex refuses two clients with one key, naming both", async () => {
  const clients = [await client("a", "same"), await client("b", "same")];

  assert.throws(() => new ApiKeyIndex(clients), (error: Error) => {
    assert.ok(error instanceof RangeError);
    assert.match(error.message, /"a" and "b"/);
    return true;
  });
});

Deno.test("presentedCredential reads Bearer and x-api-key", () => {
  const cases: [Record<string, string>, unknown][] = [
    [{ authorization: "Bearer k1" }, { value: "k1" }],
    [{ authorization: "bearer k1" }, { value: "k1" }],
    [{ authorization: "BEARER k1" }, { value: "k1" }],
    [{ "x-api-key": "k2" }, { value: "k2" }],
    [{ authorization: "Bearer k3", "x-api-key": "k3" }, { value: "k3" }],
    [{}, { none: true }],
    [
      { authorization: "Bearer k1", "x-api-key": "k2" },
      { error: "conflicting_credentials" },
    ],
    [{ authorization: "Basic dTpw" }, { error: "malformed_authorization" }],
    [{ authorization: "Bearer" }, { error: "malformed_authorization" }],
    [{ authorization: "Bearer " }, { error: "malformed_authorization" }],
    [{ authorization: "" }, { error: "malformed_authorization" }],
    [{ authorization: "Bearer  k1" }, { error: "malformed_authorization" }],
    [{ authorization: "Bearer k1 k2" }, { error: "malformed_authorization" }],
    [{ authorization: "Bearer\tk1" }, { error: "malformed_authorization" }],
    [{ authorization: "k1" }, { error: "malformed_authorization" }],
    [{ "x-api-key": "" }, { error: "malformed_api_key" }],
    [{ "x-api-key": "k1 k2" }, { error: "malformed_api_key" }],
  ];

  for (const [headers, expected] of cases) {
    assert.deepEqual(
      presentedCredential(new Headers(headers)),
      expected,
      JSON.stringify(headers),
    );
  }
});

Deno.test("presentedCredential: repeated headers are not one credential", () => {
  const twoBearers = new Headers();
  twoBearers.append("authorization", "Bearer k1");
  twoBearers.append("authorization", "Bearer k2");
  const twoKeys = new Headers();
  twoKeys.append("x-api-key", "k1");
  twoKeys.append("x-api-key", "k2");

  assert.deepEqual(presentedCredential(twoBearers), {
    error: "malformed_authorization",
  });
  assert.deepEqual(presentedCredential(twoKeys), {
    error: "malformed_api_key",
  });
});
