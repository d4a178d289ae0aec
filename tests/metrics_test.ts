import assert from "node:assert/strict";
import {
  butlerMetrics,
  OVERFLOW_LABEL_VALUE,
  PROMETHEUS_CONTENT_TYPE,
  Registry,
} from "../src/observe/metrics.ts";

// --- A small parser for the text exposition format (0.0.4) ---------------

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

interface Family {
  help: string;
  type: string;
  samples: Sample[];
}

/** Parses exposition text strictly: any line it cannot read fails the test. */
function parseExposition(text: string): Map<string, Family> {
  assert.ok(text.endsWith("\n"), "exposition must end with a newline");
  const families = new Map<string, Family>();
  let current: Family | undefined;

  for (const line of text.slice(0, -1).split("\n")) {
    const help = /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
    if (help) {
      current = { help: unescapeHelp(help[2]), type: "", samples: [] };
      assert.ok(!families.has(help[1]), `family ${help[1]} repeated`);
      families.set(help[1], current);
      continue;
    }
    const type = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (\w+)$/.exec(line);
    if (type) {
      assert.equal(families.get(type[1]), current, "TYPE follows its HELP");
      current!.type = type[2];
      continue;
    }
    assert.ok(current, `sample before any family: ${line}`);
    current.samples.push(parseSample(line));
  }
  return families;
}

function parseSample(line: string): Sample {
  const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$/.exec(line);
  assert.ok(match, `unreadable sample line: ${JSON.stringify(line)}`);
  const labels: Record<string, string> = {};
  if (match[2]) {
    let rest = match[2].slice(1, -1);
    while (rest.length > 0) {
      const pair = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)/.exec(
        rest,
      );
      assert.ok(pair, `unreadable labels: ${match[2]}`);
      labels[pair[1]] = pair[2].replace(
        /\\(.)/g,
        (_, c) => c === "n" ? "\n" : c,
      );
      rest = rest.slice(pair[0].length);
    }
  }
  const raw = match[3];
  const value = raw === "+Inf"
    ? Infinity
    : raw === "-Inf"
    ? -Infinity
    : Number(raw);
  assert.ok(!Number.isNaN(value) || raw === "NaN", `bad value ${raw}`);
  return { name: match[1], labels, value };
}

function unescapeHelp(text: string): string {
  return text.replace(/\\(.)/g, (_, c) => c === "n" ? "\n" : c);
}

function samplesOf(text: string, family: string): Sample[] {
  const found = parseExposition(text).get(family);
  assert.ok(found, `family ${family} missing`);
  return found.samples;
}

// --- Tests -----------------------------------------------------------------

Deno.test("counter: renders HELP, TYPE and one sample per label set", () => {
  const registry = new Registry();
  const requests = registry.counter("app_requests_total", "Requests.", [
    "route",
    "status",
  ]);
  requests.inc({ route: "/api/chat", status: "200" });
  requests.inc({ route: "/api/chat", status: "200" }, 2.5);
  requests.inc({ route: "/api/tags", status: "404" });

  const family = parseExposition(registry.render()).get("app_requests_total")!;
  assert.equal(family.type, "counter");
  assert.equal(family.help, "Requests.");
  assert.deepEqual(family.samples, [
    {
      name: "app_requests_total",
      labels: { route: "/api/chat", status: "200" },
      value: 3.5,
    },
    {
      name: "app_requests_total",
      labels: { route: "/api/tags", status: "404" },
      value: 1,
    },
  ]);
});

Deno.test("label values with backslash, quote and newline round-trip", () => {
  const registry = new Registry();
  const counter = registry.counter("odd_total", "Odd.", ["client"]);
  const nasty = 'a\\b"c\nd}e,f="g"';
  counter.inc({ client: nasty });

  const text = registry.render();
  const line = text.split("\n").find((l) => l.startsWith("odd_total{"))!;
  assert.equal(line, 'odd_total{client="a\\\\b\\"c\\nd}e,f=\\"g\\""} 1');
  assert.deepEqual(samplesOf(text, "odd_total")[0].labels, { client: nasty });
});

Deno.test("HELP text escapes backslash and newline", () => {
  const registry = new Registry();
  registry.gauge("g", "line one\nback\\slash", []).set({}, 1);
  const text = registry.render();
  assert.ok(text.includes("# HELP g line one\\nback\\\\slash\n"));
  assert.equal(parseExposition(text).get("g")!.help, "line one\nback\\slash");
});

Deno.test("gauge: set, inc and dec; no-label gauge has no braces", () => {
  const registry = new Registry();
  const inFlight = registry.gauge("in_flight", "In flight.", ["client"]);
  const up = registry.gauge("up", "Up.", []);
  inFlight.inc({ client: "a" });
  inFlight.inc({ client: "a" }, 3);
  inFlight.dec({ client: "a" });
  inFlight.set({ client: "b" }, 7);
  up.set({}, 1);

  const text = registry.render();
  assert.ok(text.includes("\nup 1\n"));
  assert.deepEqual(
    samplesOf(text, "in_flight").map((s) => [s.labels.client, s.value]),
    [["a", 3], ["b", 7]],
  );
});

Deno.test("histogram: buckets are cumulative, +Inf equals _count", () => {
  const registry = new Registry();
  const duration = registry.histogram("dur_seconds", "Durations.", [
    "route",
  ], [0.1, 1, 10]);
  for (const value of [0.05, 0.1, 0.5, 2, 20, 30]) {
    duration.observe({ route: "/api/chat" }, value);
  }
  duration.observe({ route: "/api/chat" }, NaN); // ignored

  const samples = samplesOf(registry.render(), "dur_seconds");
  const buckets = samples
    .filter((s) => s.name === "dur_seconds_bucket")
    .map((s) => [s.labels.le, s.value]);
  assert.deepEqual(buckets, [
    ["0.1", 2], // 0.05 and 0.1 (le is inclusive)
    ["1", 3],
    ["10", 4],
    ["+Inf", 6],
  ]);
  const sum = samples.find((s) => s.name === "dur_seconds_sum")!;
  const count = samples.find((s) => s.name === "dur_seconds_count")!;
  assert.equal(sum.value, 0.05 + 0.1 + 0.5 + 2 + 20 + 30);
  assert.equal(count.value, 6);
  assert.deepEqual(count.labels, { route: "/api/chat" });
  assert.equal(
    parseExposition(registry.render()).get("dur_seconds")!.type,
    "histogram",
  );
});

Deno.test("names, labels and buckets are validated at construction", () => {
  const registry = new Registry();
  assert.throws(
    () => registry.counter("bad-name", "x", []),
    /metric name "bad-name" is not valid/,
  );
  assert.throws(
    () => registry.counter("c1", "x", ["bad label"]),
    /label name "bad label" is not valid/,
  );
  assert.throws(
    () => registry.counter("c2", "x", ["__reserved"]),
    /label name "__reserved"/,
  );
  assert.throws(
    () => registry.counter("c3", "x", ["a", "a"]),
    /"a" is listed twice/,
  );
  assert.throws(
    () => registry.histogram("h1", "x", ["le"], [1]),
    /"le" is reserved/,
  );
  assert.throws(
    () => registry.histogram("h2", "x", [], [1, 1]),
    /buckets\[1\] is 1; bounds must be strictly increasing/,
  );
  assert.throws(
    () => registry.histogram("h3", "x", [], [1, Infinity]),
    /buckets\[1\] is Infinity/,
  );
  assert.throws(
    () => registry.histogram("h4", "x", [], []),
    /buckets is empty/,
  );
  registry.counter("dup_total", "x", []);
  assert.throws(
    () => registry.gauge("dup_total", "x", []),
    /already registered/,
  );
});

Deno.test("unknown label names and negative counter increments throw", () => {
  const registry = new Registry();
  const counter = registry.counter("c_total", "x", ["client"]);
  assert.throws(
    () => counter.inc({ client: "a", model: "m" }),
    /label "model" is not one of its labels \(client\)/,
  );
  assert.throws(() => counter.inc({ client: "a" }, -1), /inc\(-1\)/);
  assert.throws(() => counter.inc({ client: "a" }, NaN), /inc\(NaN\)/);
});

Deno.test("a missing label renders as the empty string", () => {
  const registry = new Registry();
  registry.counter("c_total", "x", ["client", "model"]).inc({ client: "a" });
  assert.deepEqual(samplesOf(registry.render(), "c_total")[0].labels, {
    client: "a",
    model: "",
  });
});

Deno.test("series cap folds new series into 'other' and counts drops", () => {
  const registry = new Registry({ maxSeriesPerMetric: 3 });
  const tokens = registry.counter("tok_total", "x", ["client", "model"]);
  const latency = registry.histogram("lat_seconds", "x", ["route"], [1]);
  for (let i = 0; i < 3; i++) tokens.inc({ client: `c${i}`, model: "m" });
  tokens.inc({ client: "c0", model: "m" }, 10); // existing series: no fold
  tokens.inc({ client: "c3", model: "m" }, 5);
  tokens.inc({ client: "c4", model: "m" }, 7);
  for (let i = 0; i < 5; i++) latency.observe({ route: `r${i}` }, 0.5);

  const text = registry.render();
  const samples = samplesOf(text, "tok_total");
  assert.deepEqual(samples.map((s) => [s.labels.client, s.value]), [
    ["c0", 11],
    ["c1", 1],
    ["c2", 1],
    [OVERFLOW_LABEL_VALUE, 12],
  ]);
  assert.deepEqual(samples[3].labels, { client: "other", model: "other" });

  const overflowCount = samplesOf(text, "lat_seconds").find((s) =>
    s.name === "lat_seconds_count" && s.labels.route === "other"
  );
  assert.equal(overflowCount?.value, 2);

  const dropped = samplesOf(text, "butler_metrics_series_dropped_total");
  assert.deepEqual(dropped.map((s) => [s.labels.metric, s.value]), [
    ["tok_total", 2],
    ["lat_seconds", 2],
  ]);
});

Deno.test("the drop counter at its own cap folds without recursing", () => {
  const registry = new Registry({ maxSeriesPerMetric: 1 });
  const z = registry.counter("z_total", "x", ["k"]);
  const y = registry.counter("y_total", "x", ["k"]);
  z.inc({ k: "a" });
  z.inc({ k: "b" }); // folds: drop counter gets its first series
  z.inc({ k: "c" }); // folds again into the same drop series
  y.inc({ k: "a" });
  y.inc({ k: "b" }); // folds: drop counter is itself full

  const dropped = samplesOf(
    registry.render(),
    "butler_metrics_series_dropped_total",
  );
  assert.deepEqual(dropped.map((s) => [s.labels.metric, s.value]), [
    ["z_total", 2],
    ["other", 1],
  ]);
});

Deno.test("maxSeriesPerMetric is validated", () => {
  assert.throws(
    () => new Registry({ maxSeriesPerMetric: 0 }),
    /maxSeriesPerMetric: 0 is not allowed/,
  );
});

Deno.test("butlerMetrics registers every Butler metric with its labels", () => {
  const registry = new Registry();
  const metrics = butlerMetrics(registry);
  metrics.requests.inc({
    client: "ci",
    model: "llama3.2:1b",
    route: "/api/chat",
    status: "200",
  });
  metrics.refusals.inc({ client: "ci", reason: "rate_limited" });
  metrics.requestDuration.observe({ route: "/api/chat" }, 1.2);
  metrics.timeToFirstByte.observe({ route: "/api/chat" }, 0.2);
  metrics.tokens.inc({ client: "ci", model: "m", kind: "prompt" }, 12);
  metrics.inFlightRequests.inc({ client: "ci" });
  metrics.inFlightStreams.inc({ client: "ci" });
  metrics.upstreamUp.set({}, 1);
  metrics.configReloads.inc({ result: "success" });
  metrics.buildInfo.set({ version: "1.0.0", deno: "2.9.6" }, 1);

  const families = parseExposition(registry.render());
  const expected: Record<string, [string, string[]]> = {
    butler_requests_total: ["counter", [
      "client",
      "user",
      "auth",
      "model",
      "route",
      "status",
    ]],
    butler_refusals_total: ["counter", ["client", "user", "auth", "reason"]],
    butler_request_duration_seconds: ["histogram", ["route", "le"]],
    butler_time_to_first_byte_seconds: ["histogram", ["route", "le"]],
    butler_tokens_total: ["counter", [
      "client",
      "user",
      "auth",
      "model",
      "kind",
    ]],
    butler_in_flight_requests: ["gauge", ["client"]],
    butler_in_flight_streams: ["gauge", ["client"]],
    butler_upstream_up: ["gauge", []],
    butler_config_reloads_total: ["counter", ["result"]],
    butler_build_info: ["gauge", ["version", "deno"]],
  };
  for (const [name, [type, labels]] of Object.entries(expected)) {
    const family = families.get(name);
    assert.ok(family, `${name} missing`);
    assert.equal(family.type, type, name);
    assert.deepEqual(Object.keys(family.samples[0].labels), labels, name);
  }
  assert.equal(
    PROMETHEUS_CONTENT_TYPE,
    "text/plain; version=0.0.4; charset=utf-8",
  );
});
