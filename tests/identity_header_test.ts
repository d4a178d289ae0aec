/**
 * `X-Butler-Client` and `X-Butler-User` are percent-encoded (RFC 3986), so
 * any name, in any script and whatever characters a token claim holds,
 * reaches Ollama as one printable ASCII header value that decodes back to
 * the name; names made only of plain characters are sent unchanged.
 */

import assert from "node:assert/strict";
import { hashPassword } from "../src/auth/password.ts";
import { upstreamRequestHeaders } from "../src/forward/headers.ts";
import { encodeIdentityHeader } from "../src/forward/identity_header.ts";
import { bearer, postJson, withStackFor } from "./support/harness.ts";

/** The `x-butler-user` and `x-butler-client` Butler would send for `name`. */
function sentFor(name: string): { user: string; client: string } {
  const headers = upstreamRequestHeaders(new Headers(), {
    client: name,
    user: name,
  });
  const user = headers.get("x-butler-user");
  const client = headers.get("x-butler-client");
  assert.ok(user !== null && client !== null);
  return { user, client };
}

// Name as configured or claimed -> value on the wire.
const CASES: [string, string][] = [
  ["alice", "alice"],
  ["李雷", "%E6%9D%8E%E9%9B%B7"],
  ["a\r\nx-evil: 1", "a%0D%0Ax-evil:%201"],
  [" carol ", "%20carol%20"],
  ["100%", "100%25"],
  ["%41", "%2541"],
  ["ålice", "%C3%A5lice"],
  ["tab\there", "tab%09here"],
  ['quote"back\\slash', "quote%22back%5Cslash"],
  ["a/b?c#d", "a%2Fb%3Fc%23d"],
  ["\x7f\x00", "%7F%00"],
  ["emoji 🦙", "emoji%20%F0%9F%A6%99"],
];

Deno.test("plain ASCII names are sent unchanged", () => {
  const plain = [
    "alice",
    "Bob_Smith-2",
    "svc.app~1",
    "user@example.com",
    "tenant:team",
    "a!$&'()*+,;=b",
    "0123456789",
  ];
  for (const name of plain) {
    assert.deepEqual(sentFor(name), { user: name, client: name }, name);
  }
});

Deno.test("other names are percent-encoded, byte by byte in UTF-8", () => {
  for (const [name, wire] of CASES) {
    assert.equal(encodeIdentityHeader(name), wire, JSON.stringify(name));
    assert.deepEqual(
      sentFor(name),
      { user: wire, client: wire },
      JSON.stringify(name),
    );
  }
});

Deno.test("the value is printable ASCII and decodes back to the name", () => {
  for (const [name] of CASES) {
    const { user } = sentFor(name);
    assert.match(user, /^[\x21-\x7e]*$/, JSON.stringify(name));
    assert.equal(decodeURIComponent(user), name, JSON.stringify(name));
  }
  // Names that differ only in what the Headers API would trim or fold.
  const values = ["carol", " carol", "carol ", "car%20ol", "car ol"].map(
    (name) => sentFor(name).user,
  );
  assert.equal(new Set(values).size, values.length, values.join(" | "));
});

Deno.test("a CR LF in a name injects no header", () => {
  const headers = upstreamRequestHeaders(
    new Headers({ "content-type": "application/json" }),
    { user: "a\r\nx-evil: 1", client: "c\r\n\r\nGET / HTTP/1.1" },
  );
  assert.equal(headers.get("x-evil"), null);
  assert.deepEqual([...headers.keys()].sort(), [
    "accept-encoding",
    "content-type",
    "x-butler-client",
    "x-butler-user",
  ]);
  assert.equal(headers.get("x-butler-user"), "a%0D%0Ax-evil:%201");
  assert.equal(
    headers.get("x-butler-client"),
    "c%0D%0A%0D%0AGET%20%2F%20HTTP%2F1.1",
  );
});

Deno.test("a lone surrogate is sent as U+FFFD rather than failing", () => {
  assert.equal(sentFor("a\uD800b").user, "a%EF%BF%BDb");
});

// End to end: people and a client named outside ASCII reach Ollama.

const PEOPLE = {
  lilei: { name: "李雷", password: "li-lei-correct-horse" },
  evil: { name: "a\r\nx-evil: 1", password: "evil-battery-staple" },
  spaced: { name: " carol ", password: "carol-tr0ub4dor-3" },
  alice: { name: "alice", password: "alice-correct-horse" },
};
const CLIENT_KEY = "test-key-cafe-0123456789";

const CONFIG = `
listen: 127.0.0.1:0
upstream: {{UPSTREAM}}
auth:
  mode: either
  jwt_secret: identity-header-secret-0123456789abcdef
clients:
  - name: "café-应用"
    key: ${CLIENT_KEY}
    allow_models: ["*"]
users:
${
  (await Promise.all(
    Object.values(PEOPLE).map(async ({ name, password }) =>
      `  - name: ${JSON.stringify(name)}
    password_hash: "${await hashPassword(password, 4)}"
    allow_models: ["*"]`
    ),
  )).join("\n")
}
`;

const CHAT = {
  model: "llama3.2",
  messages: [{ role: "user", content: "hello" }],
  stream: false,
};

Deno.test("config users named outside ASCII get 200 and an encoded X-Butler-User", async () => {
  await withStackFor(CONFIG, async (stack) => {
    for (const { name, password } of Object.values(PEOPLE)) {
      const login = await postJson(stack, "/auth/login", {
        body: { username: name, password },
      });
      assert.equal(login.status, 200, JSON.stringify(name));
      const { token } = await login.json();

      const chat = await postJson(stack, "/api/chat", {
        body: CHAT,
        headers: bearer(token),
      });
      assert.equal(chat.status, 200, JSON.stringify(name));
      await chat.body?.cancel();
    }
    const { records } = stack.sim;
    assert.deepEqual(
      records.map((record) => [record.path, record.headers["x-butler-user"]]),
      [
        ["/api/chat", "%E6%9D%8E%E9%9B%B7"],
        ["/api/chat", "a%0D%0Ax-evil:%201"],
        ["/api/chat", "%20carol%20"],
        ["/api/chat", "alice"],
      ],
    );
    for (const record of records) {
      assert.equal(record.headers["x-evil"], undefined);
      assert.equal(record.headers["x-butler-client"], undefined);
    }
    assert.equal(
      decodeURIComponent(records[0].headers["x-butler-user"]),
      "李雷",
    );
    assert.equal(
      decodeURIComponent(records[2].headers["x-butler-user"]),
      " carol ",
    );
  });
});

Deno.test("a client named outside ASCII gets 200 and an encoded X-Butler-Client", async () => {
  await withStackFor(CONFIG, async (stack) => {
    const chat = await postJson(stack, "/api/chat", {
      body: CHAT,
      headers: bearer(CLIENT_KEY),
    });
    assert.equal(chat.status, 200);
    await chat.body?.cancel();
    const [record] = stack.sim.records;
    assert.equal(
      record.headers["x-butler-client"],
      "caf%C3%A9-%E5%BA%94%E7%94%A8",
    );
    assert.equal(
      decodeURIComponent(record.headers["x-butler-client"]),
      "café-应用",
    );
    assert.equal(record.headers["x-butler-user"], undefined);
  });
});
