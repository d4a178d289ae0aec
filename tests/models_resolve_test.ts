import assert from "node:assert/strict";
import { ModelRefError, resolveModelRef } from "../src/models/resolve.ts";

Deno.test("references Ollama reads as one model resolve to one name", () => {
  const names = [
    "llama3.2",
    "llama3.2:latest",
    "library/llama3.2:latest",
    "registry.ollama.ai/library/llama3.2:latest",
    " LLAMA3.2 ",
    "\t\nLlama3.2:LATEST\u00a0",
    "\u3000llama3.2\u2028",
    "llama3.2:latest:local",
    "llama3.2:LOCAL",
    "llama3.2: local",
    "REGISTRY.OLLAMA.AI/Library/llama3.2",
  ];
  for (const name of names) {
    const ref = resolveModelRef(name);
    assert.deepEqual(
      ref.full,
      "registry.ollama.ai/library/llama3.2:latest",
      JSON.stringify(name),
    );
    assert.deepEqual(ref.display, "llama3.2:latest", JSON.stringify(name));
    assert.deepEqual(ref.source === "cloud", false);
  }
});

Deno.test("parts, defaults and whether a tag was written", () => {
  assert.deepEqual(resolveModelRef("llama3.2"), {
    host: "registry.ollama.ai",
    namespace: "library",
    model: "llama3.2",
    tag: "latest",
    hasTag: false,
    source: "default",
    full: "registry.ollama.ai/library/llama3.2:latest",
    display: "llama3.2:latest",
  });
  assert.deepEqual(resolveModelRef("llama3.2:1B").tag, "1b");
  assert.deepEqual(resolveModelRef("llama3.2:1b").hasTag, true);
  assert.deepEqual(resolveModelRef("llama3.2:latest").hasTag, true);
  assert.deepEqual(resolveModelRef("llama3.2:1b:local").source, "local");
  assert.deepEqual(resolveModelRef("llama3.2:1b:local").hasTag, true);
});

Deno.test("namespaces and hosts: two parts are namespace/model", () => {
  const ns = resolveModelRef("Me/Model:V1");
  assert.deepEqual([ns.host, ns.namespace, ns.model, ns.tag], [
    "registry.ollama.ai",
    "me",
    "model",
    "v1",
  ]);
  assert.deepEqual(ns.display, "me/model:v1");

  const hosted = resolveModelRef("localhost:5000/team/model");
  assert.deepEqual(hosted.host, "localhost:5000");
  assert.deepEqual(hosted.namespace, "team");
  assert.deepEqual(hosted.tag, "latest");
  assert.deepEqual(hosted.hasTag, false);
  assert.deepEqual(hosted.display, "localhost:5000/team/model:latest");

  const hostedTag = resolveModelRef("example.com:443/team/model:q4");
  assert.deepEqual(hostedTag.full, "example.com:443/team/model:q4");
  assert.deepEqual(
    resolveModelRef("registry.ollama.ai/team/m").display,
    "team/m:latest",
  );
});

Deno.test("cloud source: :cloud suffix and -cloud tags", () => {
  const dash = resolveModelRef("gpt-oss:120b-cloud");
  assert.deepEqual(dash.source, "cloud");
  assert.deepEqual(dash.tag, "120b");
  assert.deepEqual(dash.hasTag, true);
  assert.deepEqual(dash.full, "registry.ollama.ai/library/gpt-oss:120b:cloud");
  assert.deepEqual(dash.display, "gpt-oss:120b:cloud");

  const suffix = resolveModelRef("llama3.2:cloud");
  assert.deepEqual(suffix.source, "cloud");
  assert.deepEqual(suffix.tag, "latest");
  assert.deepEqual(suffix.hasTag, false);

  assert.deepEqual(resolveModelRef("gpt-oss:120b:CLOUD").full, dash.full);
  assert.deepEqual(resolveModelRef("GPT-OSS:120B-Cloud").full, dash.full);
  assert.deepEqual(resolveModelRef("gpt-oss: 120b-cloud").full, dash.full);
  assert.deepEqual(resolveModelRef("llama3.2:\u00a0cloud").source, "cloud");
  // the round trip keeps the source
  assert.deepEqual(resolveModelRef(dash.full).full, dash.full);
  assert.deepEqual(resolveModelRef(dash.display).full, dash.full);
  // a "/" after the last ":" is not a tag: no -cloud marking
  assert.deepEqual(resolveModelRef("host:1/ns/m-cloud").source, "default");
});

Deno.test("invalid references throw ModelRefError naming the rule", () => {
  const cases: Array<[string, RegExp]> = [
    ["", /required/],
    ["   ", /required/],
    ["x:cloud:local", /two sources/],
    ["x:local:cloud", /two sources/],
    ["x:1b-cloud:cloud", /two sources/],
    ["x:local:local", /two sources/],
    ["llama3.2@sha256:abcdef", /digest/],
    ["llama3.2:1b@sha256:abcdef", /digest/],
    ["@sha256:abcdef", /digest/],
    ["https://registry.ollama.ai/library/llama3.2", /scheme/],
    ["llama3.2:", /empty tag/],
    [":1b", /empty part before/],
    ["/llama3.2", /empty part before/],
    ["ns/", /empty model/],
    ["a//b", /empty/],
    ["a/b/c/d", /host/],
    ["example.com/model", /namespace/],
    ["-model", /model/],
    [".model", /model/],
    ["mo del", /model/],
    ["llama3.2:1b:2b", /the model "llama3.2:1b"/],
    ["m:-cloud", /empty tag/],
    ["llamа3.2", /model/], // Cyrillic а
    ["\ufeffllama3.2", /model/], // Go does not trim a BOM
    ["\u200bllama3.2", /model/],
  ];
  for (const [name, rule] of cases) {
    assert.throws(
      () => resolveModelRef(name),
      (error: unknown) =>
        error instanceof ModelRefError && rule.test(error.message),
      JSON.stringify(name),
    );
  }
  assert.throws(() => resolveModelRef("m".repeat(81)), /at most 80/);
  assert.deepEqual(resolveModelRef("m".repeat(80)).model.length, 80);
  assert.throws(() => resolveModelRef(`m:${"t".repeat(81)}`), /tag/);
  assert.throws(
    () => resolveModelRef(`${"h".repeat(351)}/ns/m`),
    /at most 350/,
  );
  assert.deepEqual(resolveModelRef(`${"h".repeat(350)}/ns/m`).host.length, 350);
  assert.throws(() => resolveModelRef(`${"n".repeat(81)}/m`), /namespace/);
});

Deno.test("the error message names the reference", () => {
  assert.throws(
    () => resolveModelRef("bad name"),
    (error: unknown) =>
      error instanceof ModelRefError &&
      error.message.startsWith('model "bad name": the model "bad name"'),
  );
});
