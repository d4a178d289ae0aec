import assert from "node:assert/strict";
import {
  compileModelPattern,
  decideModel,
  type ModelPattern,
} from "../src/models/match.ts";
import { ModelRefError, resolveModelRef } from "../src/models/resolve.ts";

function rules(allow: string[], deny: string[] = []): {
  allow: ModelPattern[];
  deny: ModelPattern[];
} {
  return {
    allow: allow.map(compileModelPattern),
    deny: deny.map(compileModelPattern),
  };
}

function decide(ref: string, allow: string[], deny: string[] = []) {
  return decideModel(resolveModelRef(ref), rules(allow, deny));
}

Deno.test("pattern matching table", () => {
  const table: Array<[pattern: string, ref: string, matches: boolean]> = [
    ["llama3.2", "llama3.2", true],
    ["llama3.2", "llama3.2:1b", true],
    ["llama3.2", "LLAMA3.2:70B", true],
    ["llama3.2", "registry.ollama.ai/library/llama3.2:3b", true],
    ["llama3.2", "llama3.2:1b:local", true],
    ["llama3.2", "llama3.2:cloud", true], // names it; allow adds the cloud rule
    ["llama3.2", "llama3", false],
    ["llama3.2", "llama3.2-vision", false],
    ["llama3.2", "me/llama3.2", false],
    ["llama3.2", "example.com/library/llama3.2", false],
    ["llama3.2:1b", "llama3.2:1b", true],
    ["llama3.2:1b", "llama3.2:1B:local", true],
    ["llama3.2:1b", "llama3.2:3b", false],
    ["llama3.2:1b", "llama3.2", false],
    ["llama3.2:latest", "llama3.2", true],
    ["Library/LLAMA3.2:Latest", "llama3.2", true],
    ["registry.ollama.ai/library/llama3.2:1b", "llama3.2:1b", true],
    ["me/model", "ME/Model:v2", true],
    ["me/model", "model", false],
    ["localhost:5000/team/m:q4", "LOCALHOST:5000/team/m:q4", true],
    ["gpt-oss:120b-cloud", "gpt-oss:120b-cloud", true],
    ["gpt-oss:120b-cloud", "gpt-oss:120b:cloud", true],
    ["gpt-oss:120b-cloud", "gpt-oss:120b", false], // a cloud pattern names cloud only
    ["gpt-oss:120b-cloud", "gpt-oss:20b-cloud", false],
    ["gpt-oss:cloud", "gpt-oss:20b-cloud", true], // tagless: every cloud tag
    ["gpt-oss:cloud", "gpt-oss:cloud", true],
    ["gpt-oss:cloud", "gpt-oss:20b", false],
    ["*", "anything/at:all", true],
    ["*", "gpt-oss:120b-cloud", true],
  ];
  for (const [pattern, ref, expected] of table) {
    assert.equal(
      compileModelPattern(pattern).matches(resolveModelRef(ref)),
      expected,
      `${pattern} vs ${ref}`,
    );
  }
});

Deno.test("explicitCloud marks only patterns that name the cloud", () => {
  assert.equal(compileModelPattern("gpt-oss:120b-cloud").explicitCloud, true);
  assert.equal(compileModelPattern("llama3.2:cloud").explicitCloud, true);
  assert.equal(compileModelPattern("llama3.2:1b:CLOUD").explicitCloud, true);
  assert.equal(compileModelPattern("llama3.2").explicitCloud, false);
  assert.equal(compileModelPattern("llama3.2:local").explicitCloud, false);
  assert.equal(compileModelPattern("*").explicitCloud, false);
  assert.equal(compileModelPattern(" * ").text, " * ");
});

Deno.test("invalid patterns throw ModelRefError", () => {
  for (const text of ["llama*", "*:cloud", "", "bad name", "x:cloud:local"]) {
    assert.throws(
      () => compileModelPattern(text),
      ModelRefError,
      JSON.stringify(text),
    );
  }
});

Deno.test("deny by default", () => {
  assert.deepEqual(decide("llama3.2", []), {
    allowed: false,
    reason: "not_allowed",
  });
  assert.deepEqual(decide("llama3.2", ["mistral"]), {
    allowed: false,
    reason: "not_allowed",
  });
});

Deno.test("deny before allow", () => {
  assert.deepEqual(decide("llama3.2:1b", ["*"], ["llama3.2"]), {
    allowed: false,
    reason: "denied",
    pattern: "llama3.2",
  });
  assert.deepEqual(decide("llama3.2:1b", ["llama3.2:1b"], ["*"]), {
    allowed: false,
    reason: "denied",
    pattern: "*",
  });
  assert.deepEqual(decide("llama3.2:3b", ["*"], ["llama3.2:1b"]), {
    allowed: true,
    reason: "allowed",
    pattern: "*",
  });
  assert.equal(decide("mistral", ["*"], ["llama3.2"]).allowed, true);
});

Deno.test("deny is broad: tagless and * deny cloud references too", () => {
  for (const ref of ["gpt-oss:120b-cloud", "gpt-oss:cloud", "gpt-oss:20b"]) {
    assert.equal(
      decide(ref, ["gpt-oss:120b-cloud", "gpt-oss:cloud", "*"], ["gpt-oss"])
        .reason,
      "denied",
      ref,
    );
    assert.equal(decide(ref, ["*", "gpt-oss:cloud"], ["*"]).reason, "denied");
  }
});

Deno.test("cloud references need an explicit cloud allow pattern", () => {
  assert.deepEqual(decide("gpt-oss:120b-cloud", ["*"]), {
    allowed: false,
    reason: "cloud_not_explicit",
    pattern: "*",
  });
  assert.deepEqual(decide("gpt-oss:120b-cloud", ["gpt-oss"]), {
    allowed: false,
    reason: "cloud_not_explicit",
    pattern: "gpt-oss",
  });
  assert.deepEqual(decide("gpt-oss:120b:cloud", ["gpt-oss:120b"]), {
    allowed: false,
    reason: "cloud_not_explicit",
    pattern: "gpt-oss:120b",
  });
  assert.deepEqual(decide("llama3.2:cloud", ["llama3.2:local"]), {
    allowed: false,
    reason: "cloud_not_explicit",
    pattern: "llama3.2:local",
  });
  assert.deepEqual(
    decide("gpt-oss:120b-cloud", ["*", "gpt-oss:120b-cloud"]),
    { allowed: true, reason: "allowed", pattern: "gpt-oss:120b-cloud" },
  );
  assert.equal(
    decide("gpt-oss:120b:cloud", ["gpt-oss:120b-cloud"]).allowed,
    true,
  );
  assert.equal(decide("llama3.2:cloud", ["llama3.2:cloud"]).allowed, true);
  assert.equal(
    decide("gpt-oss:20b-cloud", ["gpt-oss:120b-cloud"]).reason,
    "not_allowed",
  );
  // the local model is still allowed by a tagless or * pattern
  assert.equal(decide("gpt-oss:120b", ["*"]).allowed, true);
  assert.equal(decide("gpt-oss:120b:local", ["gpt-oss"]).allowed, true);
  // a cloud pattern does not allow the local model
  assert.equal(
    decide("gpt-oss:120b", ["gpt-oss:120b-cloud"]).reason,
    "not_allowed",
  );
});

Deno.test("digest references are refused before matching", () => {
  assert.throws(
    () => resolveModelRef("llama3.2@sha256:" + "a".repeat(64)),
    ModelRefError,
  );
});
