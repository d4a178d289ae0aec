import assert from "node:assert/strict";
import { Logger } from "../src/observe/log.ts";

const FIXED = new Date("2026-03-04T05:06:07.089Z");

function capture(level?: "debug" | "info" | "warn" | "error") {
  const lines: string[] = [];
  const log = new Logger({
    sink: (line) => lines.push(line),
    level,
    now: () => FIXED,
  });
  return { log, lines };
}

Deno.test("one JSON object per line: time, level, msg first, then fields", () => {
  const { log, lines } = capture();
  log.warn("refused", { client: "ci", reason: "rate_limited", status: 429 });

  assert.equal(lines.length, 1);
  assert.equal(
    lines[0],
    '{"time":"2026-03-04T05:06:07.089Z","level":"warn","msg":"refused",' +
      '"client":"ci","reason":"rate_limited","status":429}',
  );
});

Deno.test("undefined fields are dropped, null and nested values kept", () => {
  const { log, lines } = capture();
  log.info("response", {
    user: undefined,
    model: null,
    tokens: { prompt: 3, generated: undefined },
  });
  assert.deepEqual(JSON.parse(lines[0]), {
    time: FIXED.toISOString(),
    level: "info",
    msg: "response",
    model: null,
    tokens: { prompt: 3 },
  });
});

Deno.test("lines below the configured level are not written", () => {
  const { log, lines } = capture("warn");
  log.debug("d");
  log.info("i");
  log.warn("w");
  log.error("e");
  assert.deepEqual(lines.map((l) => JSON.parse(l).level), ["warn", "error"]);
  assert.equal(log.enabled("info"), false);
  assert.equal(log.enabled("error"), true);
});

Deno.test("default level is info", () => {
  const { log, lines } = capture();
  log.debug("hidden");
  log.info("shown");
  assert.deepEqual(lines.map((l) => JSON.parse(l).msg), ["shown"]);
});

Deno.test("fields cannot overwrite time, level or msg", () => {
  const { log, lines } = capture();
  log.info("real", { time: "fake", level: "error", msg: "forged", ok: 1 });
  assert.deepEqual(JSON.parse(lines[0]), {
    time: FIXED.toISOString(),
    level: "info",
    msg: "real",
    ok: 1,
  });
});

Deno.test("newlines in values stay inside one line", () => {
  const { log, lines } = capture();
  log.info("multi\nline", { detail: "a\nb\r\nc" });
  assert.equal(lines.length, 1);
  assert.ok(!lines[0].includes("\n"));
  assert.equal(JSON.parse(lines[0]).detail, "a\nb\r\nc");
});

Deno.test("errors and bigints are logged as strings", () => {
  const { log, lines } = capture();
  log.error("failed", { error: new TypeError("bad thing"), big: 12n });
  const parsed = JSON.parse(lines[0]);
  assert.equal(parsed.error, "TypeError: bad thing");
  assert.equal(parsed.big, "12");
});

Deno.test("unserializable fields never throw; the line says why", () => {
  const { log, lines } = capture();
  const cycle: Record<string, unknown> = {};
  cycle.self = cycle;
  log.info("with cycle", { cycle });
  const parsed = JSON.parse(lines[0]);
  assert.equal(parsed.msg, "with cycle");
  assert.match(parsed.log_error, /^fields not serializable: /);
  assert.equal(parsed.cycle, undefined);
});

Deno.test("a throwing sink is ignored", () => {
  const log = new Logger({
    sink: () => {
      throw new Error("disk full");
    },
  });
  log.info("still fine");
  log.error("still fine");
});

Deno.test("an unknown level is refused with the value", () => {
  assert.throws(
    // deno-lint-ignore no-explicit-any
    () => new Logger({ level: "verbose" as any }),
    /log level: "verbose" is not a level/,
  );
});

Deno.test("stdout: many lines from a burst arrive whole and in order", async () => {
  // A child process logs a burst through the default (queued) stdout sink,
  // then flushes; every line must arrive whole, once, in order.
  const url = new URL("../src/observe/log.ts", import.meta.url).href;
  const script = `
    import { Logger } from ${JSON.stringify(url)};
    const log = new Logger();
    const pad = "x".repeat(300);
    for (let i = 0; i < 5000; i++) log.info("line", { i, pad });
    await log.flush();
  `;
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--no-lock", script],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));

  const text = new TextDecoder().decode(output.stdout);
  assert.ok(text.endsWith("\n"));
  const lines = text.slice(0, -1).split("\n");
  assert.equal(lines.length, 5000);
  lines.forEach((line, i) => {
    const parsed = JSON.parse(line);
    assert.equal(parsed.i, i);
    assert.equal(parsed.level, "info");
  });
});
