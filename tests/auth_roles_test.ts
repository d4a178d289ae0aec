import assert from "node:assert/strict";
import type {
  PromptPattern,
  Rate,
  SubjectPolicy,
} from "../src/config/policy.ts";
import { policyForRoles } from "../src/auth/roles.ts";

function pattern(index: number, source: string): PromptPattern {
  return { index, source, test: (text) => text.includes(source) };
}

function rate(count: number, periodMs: number, text: string): Rate {
  return { count, periodMs, text };
}

function role(
  name: string,
  fields: Partial<SubjectPolicy> = {},
): SubjectPolicy {
  return {
    origin: `role_policies.${name}`,
    allowModels: [],
    denyModels: [],
    denyPromptPatterns: [],
    capMode: "refuse",
    allowContext: false,
    allowManagement: false,
    ...fields,
  };
}

const secretsPattern = pattern(0, "secret");
const exfilPattern = pattern(1, "exfiltrate");

const rolePolicies = new Map<string, SubjectPolicy>([
  [
    "reader",
    role("reader", {
      allowModels: ["llama3.2"],
      denyModels: ["llama3.2:70b"],
      rateLimit: rate(10, 60_000, "10/min"),
      maxCtx: 4096,
      maxPredict: 512,
      maxConcurrent: 1,
      maxTokensPerDay: 10_000,
      denyPromptPatterns: [secretsPattern],
      capMode: "clamp",
    }),
  ],
  [
    "dev",
    role("dev", {
      allowModels: ["llama3.2", "qwen3"],
      denyModels: ["*:cloud"],
      rateLimit: rate(1, 1_000, "1/sec"),
      maxCtx: 8192,
      maxPredict: undefined,
      maxConcurrent: 2,
      maxKeepAliveSeconds: 300,
      denyPromptPatterns: [exfilPattern],
      allowContext: true,
      capMode: "clamp",
    }),
  ],
  [
    "ops",
    role("ops", {
      allowModels: ["*"],
      maxCtx: 2048,
      maxConcurrent: 1,
      maxKeepAliveSeconds: 60,
      maxTokensPerDay: 5_000,
      allowManagement: true,
      capMode: "refuse",
    }),
  ],
]);

const override = role("override", { allowModels: ["tiny"] });
const userOverrides = new Map([["carol", override]]);

function forRoles(roles: string[], username = "alice") {
  return policyForRoles(roles, { rolePolicies, userOverrides, username });
}

Deno.test("no matching role: undefined, so the caller refuses", () => {
  assert.equal(forRoles([]), undefined);
  assert.equal(forRoles(["guest", "offline_access"]), undefined);
});

Deno.test("one matching role: that role's policy as it is", () => {
  assert.equal(forRoles(["guest", "reader"]), rolePolicies.get("reader"));
  assert.equal(forRoles(["dev", "dev"]), rolePolicies.get("dev"));
});

Deno.test("a user override replaces role policy, even with no roles", () => {
  assert.equal(forRoles(["dev", "ops"], "carol"), override);
  assert.equal(forRoles([], "carol"), override);
});

Deno.test("merge table: allowances most-permissive, denials all apply", () => {
  const merged = forRoles(["reader", "dev"]);
  assert.ok(merged !== undefined);

  const table: [keyof SubjectPolicy, unknown][] = [
    ["origin", "role_policies.reader + role_policies.dev"],
    ["allowModels", ["llama3.2", "qwen3"]],
    ["denyModels", ["llama3.2:70b", "*:cloud"]],
    ["denyPromptPatterns", [secretsPattern, exfilPattern]],
    // 1/sec is 60/min: more than 10/min.
    ["rateLimit", rate(1, 1_000, "1/sec")],
    ["maxCtx", 8192],
    // dev has no num_predict limit: no limit wins.
    ["maxPredict", undefined],
    ["maxConcurrent", 2],
    // reader has no keep_alive cap.
    ["maxKeepAliveSeconds", undefined],
    // dev has no daily budget.
    ["maxTokensPerDay", undefined],
    ["capMode", "clamp"],
    ["allowContext", true],
    ["allowManagement", false],
  ];
  for (const [field, expected] of table) {
    assert.deepEqual(merged[field], expected, field);
  }
});

Deno.test("merge table: refuse unless every role clamps; flags if any role has them", () => {
  const merged = forRoles(["reader", "ops"]);
  assert.ok(merged !== undefined);

  const table: [keyof SubjectPolicy, unknown][] = [
    ["allowModels", ["llama3.2", "*"]],
    ["denyModels", ["llama3.2:70b"]],
    ["denyPromptPatterns", [secretsPattern]],
    // ops has no rate limit.
    ["rateLimit", undefined],
    ["maxCtx", 4096],
    ["maxConcurrent", 1],
    ["maxKeepAliveSeconds", undefined],
    ["maxTokensPerDay", 10_000],
    ["capMode", "refuse"],
    ["allowContext", false],
    ["allowManagement", true],
  ];
  for (const [field, expected] of table) {
    assert.deepEqual(merged[field], expected, field);
  }
});

Deno.test("merged policies are frozen", () => {
  const merged = forRoles(["reader", "dev", "ops"]);
  assert.ok(merged !== undefined);

  assert.ok(Object.isFrozen(merged));
  assert.ok(Object.isFrozen(merged.denyModels));
  assert.deepEqual(merged.denyModels, ["llama3.2:70b", "*:cloud"]);
});
