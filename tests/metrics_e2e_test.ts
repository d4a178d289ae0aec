/**
 * `/metrics` end to end: real traffic through Butler, then the exposition
 * text parsed back and checked series by series. Label values may come only
 * from the config and from model names that passed the model rules.
 */

import assert from "node:assert/strict";
import { bearer, KEYS, startStack } from "./support/harness.ts";
import { VERSION } from "../src/version.ts";
import { startOllamaSim } from "./sim/ollama_sim.ts";

const METRICS_BEARER = "metrics-bearer-0123456789";

const CONFIG = `
listen: 127.0.0.1:0
upstream: {{UPSTREAM}}
metrics:
  bearer: ${METRICS_BEARER}
clients:
  - name: app
    key: ${KEYS.app}
    allow_models: ["llama3.2", "nomic-embed-text"]
`;

interface Sample {
  readonly name: string;
  readonly labels: Record<string, string>;
  readonly value: number;
}

/** Parses the Prometheus text format (0.0.4) into samples and types. */
function parseExposition(text: string) {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  assert.ok(text.endsWith("\n"), "the exposition ends with a newline");
  for (const line of text.split("\n")) {
    if (line === "") continue;
    if (line.startsWith("# TYPE ")) {
      const [name, type] = line.slice(7).split(" ");
      types.set(name, type);
      continue;
    }
    if (line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(match, `not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    const pairs = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?/g;
    for (const [, label, raw] of (match[3] ?? "").matchAll(pairs)) {
      labels[label] = raw.replace(
        /\\(.)/g,
        (_, c) => c === "n" ? "\n" : c,
      );
    }
    const value = match[4] === "+Inf" ? Infinity : Number(match[4]);
    assert.ok(!Number.isNaN(value), `bad value in ${line}`);
    samples.push({ name: match[1], labels, value });
  }
  return { samples, types };
}

function find(
  samples: Sample[],
  name: string,
  labels: Record<string, string>,
): Sample[] {
  return samples.filter((s) =>
    s.name === name &&
    Object.entries(labels).every(([k, v]) => s.labels[k] === v)
  );
}

function value(
  samples: Sample[],
  name: string,
  labels: Record<string, string>,
): number {
  const found = find(samples, name, labels);
  assert.equal(found.length, 1, `${name} ${JSON.stringify(labels)}`);
  return found[0].value;
}

Deno.test("metrics after real traffic, parsed back", async () => {
  const stack = await startStack(CONFIG, { sim: { chunks: 3 } });
  const post = (path: string, body: unknown, key: string = KEYS.app) =>
    fetch(stack.url + path, {
      method: "POST",
      headers: bearer(key),
      body: JSON.stringify(body),
    });
  try {
    // Traffic: two chats (one streamed), an embedding, and refusals.
    await (await post("/api/chat", {
      model: "llama3.2",
      messages: [{ role: "user", content: "hello" }],
    })).text();
    await (await post("/v1/chat/completions", {
      model: "llama3.2",
      messages: [{ role: "user", content: "hello" }],
    })).text();
    await (await post("/api/embed", {
      model: "nomic-embed-text",
      input: "x",
    })).text();
    const garbage = `evil-${crypto.randomUUID()}`;
    const denied = await post("/api/chat", { model: garbage, messages: [] });
    assert.equal(denied.status, 403);
    await denied.body?.cancel();
    const anonymous = await post("/api/chat", { model: "llama3.2" }, "x");
    assert.equal(anonymous.status, 401);
    await anonymous.body?.cancel();
    const unknown = await fetch(stack.url + `/api/${garbage}`);
    assert.equal(unknown.status, 404);
    await unknown.body?.cancel();
    await (await fetch(stack.url + "/healthz")).text();

    // Reloads: one good, one broken.
    assert.equal(await stack.butler.reload(), true);
    const good = await Deno.readTextFile(stack.configPath);
    await Deno.writeTextFile(stack.configPath, good + "\nnot_a_setting: 1\n");
    assert.equal(await stack.butler.reload(), false);
    await Deno.writeTextFile(stack.configPath, good);

    // The endpoint wants its bearer.
    const unauthorized = await fetch(stack.url + "/metrics");
    assert.equal(unauthorized.status, 401);
    await unauthorized.body?.cancel();
    const wrong = await fetch(stack.url + "/metrics", {
      headers: bearer(KEYS.app),
    });
    assert.equal(wrong.status, 401);
    await wrong.body?.cancel();
    // The scheme is matched without case, the token exactly.
    for (
      const [authorization, status] of [
        [`bearer ${METRICS_BEARER}`, 200],
        [`BEARER  ${METRICS_BEARER}`, 200],
        [`Bearer ${METRICS_BEARER.toUpperCase()}`, 401],
        [`Bearer ${METRICS_BEARER}x`, 401],
        [`Basic ${METRICS_BEARER}`, 401],
        [METRICS_BEARER, 401],
        [`Bearer ${METRICS_BEARER} `, 200],
        [`Bearer ${METRICS_BEARER} x`, 401],
        ["Bearer ", 401],
      ] as const
    ) {
      const answer = await fetch(stack.url + "/metrics", {
        headers: { authorization },
      });
      assert.equal(answer.status, status, authorization);
      await answer.body?.cancel();
    }

    // Accounting of the last request finishes just after its body.
    await new Promise((resolve) => setTimeout(resolve, 50));
    const response = await fetch(stack.url + "/metrics", {
      headers: bearer(METRICS_BEARER),
    });
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type")!, /^text\/plain/);
    const text = await response.text();
    const { samples, types } = parseExposition(text);

    // No label value anywhere carries what a client made up.
    assert.ok(!text.includes(garbage), "a client's model name became a label");
    assert.ok(!text.includes("evil-"));

    // Requests by client, user, auth, model, route and status.
    const app = { client: "app", auth: "api_key", user: "-" };
    assert.equal(types.get("butler_requests_total"), "counter");
    assert.equal(
      value(samples, "butler_requests_total", {
        ...app,
        model: "llama3.2:latest",
        route: "/api/chat",
        status: "200",
      }),
      1,
    );
    assert.equal(
      value(samples, "butler_requests_total", {
        ...app,
        route: "/v1/chat/completions",
        status: "200",
      }),
      1,
    );
    assert.equal(
      value(samples, "butler_requests_total", {
        ...app,
        model: "nomic-embed-text:latest",
        route: "/api/embed",
      }),
      1,
    );

    // Refusals by client and reason.
    assert.equal(
      value(samples, "butler_refusals_total", {
        client: "app",
        reason: "model_denied",
      }),
      1,
    );
    assert.equal(
      find(samples, "butler_refusals_total", { client: "-" })
        .map((s) => s.labels.reason).sort().join(","),
      "unknown_key,unknown_route",
    );

    // Duration and time to first byte, by route: consistent histograms.
    for (
      const name of [
        "butler_request_duration_seconds",
        "butler_time_to_first_byte_seconds",
      ]
    ) {
      assert.equal(types.get(name), "histogram");
      for (const route of ["/api/chat", "/v1/chat/completions", "/api/embed"]) {
        const buckets = find(samples, `${name}_bucket`, { route });
        assert.ok(buckets.length > 2, `${name} ${route}`);
        for (let i = 1; i < buckets.length; i++) {
          assert.ok(buckets[i].value >= buckets[i - 1].value);
        }
        const count = value(samples, `${name}_count`, { route });
        assert.equal(count, 1, `${name} ${route}`);
        assert.equal(buckets.at(-1)!.labels.le, "+Inf");
        assert.equal(buckets.at(-1)!.value, count);
        assert.ok(value(samples, `${name}_sum`, { route }) > 0);
      }
    }

    // Tokens by client, model and kind.
    assert.equal(
      value(samples, "butler_tokens_total", {
        ...app,
        model: "llama3.2:latest",
        kind: "generated",
      }),
      6,
    );
    assert.ok(
      value(samples, "butler_tokens_total", {
        ...app,
        model: "llama3.2:latest",
        kind: "prompt",
      }) > 0,
    );

    // Nothing in flight any more.
    for (
      const name of ["butler_in_flight_requests", "butler_in_flight_streams"]
    ) {
      assert.equal(types.get(name), "gauge");
      assert.equal(value(samples, name, { client: "app" }), 0, name);
    }

    // Upstream reachability, reloads by result, build info.
    assert.equal(value(samples, "butler_upstream_up", {}), 1);
    assert.equal(
      value(samples, "butler_config_reloads_total", { result: "success" }),
      1,
    );
    assert.equal(
      value(samples, "butler_config_reloads_total", { result: "failure" }),
      1,
    );
    assert.equal(
      value(samples, "butler_build_info", {
        version: VERSION,
        deno: Deno.version.deno,
      }),
      1,
    );
  } finally {
    await stack.close();
  }
});

Deno.test("upstream_up follows Ollama going away and coming back", async () => {
  const stack = await startStack(CONFIG);
  try {
    await stack.sim.close();
    const response = await fetch(stack.url + "/api/chat", {
      method: "POST",
      headers: bearer(KEYS.app),
      body: JSON.stringify({ model: "llama3.2", messages: [] }),
    });
    assert.equal(response.status, 502);
    await response.body?.cancel();
    const text = await (await fetch(stack.url + "/metrics", {
      headers: bearer(METRICS_BEARER),
    })).text();
    const { samples } = parseExposition(text);
    assert.equal(value(samples, "butler_upstream_up", {}), 0);
    assert.equal(
      value(samples, "butler_refusals_total", {
        client: "app",
        reason: "upstream_unavailable",
      }),
      1,
    );
    for (const gauge of find(samples, "butler_in_flight_requests", {})) {
      assert.equal(gauge.value, 0);
    }

    // Ollama is back: the next answered request says so.
    const again = await startOllamaSim({ port: stack.sim.port });
    try {
      const answered = await fetch(stack.url + "/api/chat", {
        method: "POST",
        headers: bearer(KEYS.app),
        body: JSON.stringify({ model: "llama3.2", messages: [] }),
      });
      assert.equal(answered.status, 200);
      await answered.body?.cancel();
      const after = parseExposition(
        await (await fetch(stack.url + "/metrics", {
          headers: bearer(METRICS_BEARER),
        })).text(),
      );
      assert.equal(value(after.samples, "butler_upstream_up", {}), 1);
    } finally {
      await again.close();
    }
  } finally {
    await stack.butler.shutdown();
  }
});
