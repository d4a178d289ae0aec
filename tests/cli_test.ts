/**
 * The command line, run as a real `deno run main.ts …` child process:
 * `check`, `gen-key`, `permissions`, `hash-password`, `healthcheck`, usage
 * and exit codes.
 */

import assert from "node:assert/strict";
import bcrypt from "bcryptjs";
import { startOllamaSim } from "./sim/ollama_sim.ts";
import { startButler } from "../src/serve.ts";
import { Logger } from "../src/observe/log.ts";
import { startStack, writeConfig } from "./support/harness.ts";
import {
  flagsBeforeMain,
  freePort,
  type Ran,
  ROOT,
} from "./support/butler_process.ts";

/** Runs `deno run <flags> main.ts <args>` in the repo root. */
async function butler(
  args: string[],
  options: { stdin?: string; env?: Record<string, string>; flags?: string[] } =
    {},
): Promise<Ran> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...(options.flags ?? ["-A"]), "main.ts", ...args],
    cwd: ROOT,
    env: options.env,
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (options.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(options.stdin));
    await writer.close();
  }
  const output = await child.output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-256",
    new TextEncoder().encode(text),
  );
  return Array.from(
    new Uint8Array(digest),
    (b) => b.toString(16).padStart(2, "0"),
  )
    .join("");
}

const VALID = `
listen: 127.0.0.1:18080
upstream: http://127.0.0.1:11434
clients:
  - name: webui
    key: webui-key-0123456789
    allow_models: ["llama3.2", "qwen2.5:7b"]
    deny_models: ["llama3.2:1b"]
    rate_limit: 60/min
    max_predict: 512
  - name: ops
    key_sha256: ${"ab".repeat(32)}
    allow_models: ["*"]
    allow_management: true
`;

Deno.test("check: a valid config prints each client's rights and exits 0", async () => {
  const path = await writeConfig(VALID);
  const ran = await butler(["check", "--config", path]);
  assert.equal(ran.code, 0, ran.stderr);
  const out = ran.stdout;
  assert.match(out, new RegExp(`config ${path} is valid`));
  assert.match(
    out,
    /listen 127\.0\.0\.1:18080, upstream http:\/\/127\.0\.0\.1:11434/,
  );
  assert.match(
    out,
    /client webui:\n {2}models allowed: llama3\.2, qwen2\.5:7b\n {2}models denied: llama3\.2:1b\n {2}rate limit: 60\/min\n {2}max_predict: 512/,
  );
  assert.match(
    out,
    /client ops:\n {2}models allowed: \*\n[^]*may manage models/,
  );
  // No secret is echoed: neither the key nor the digest.
  assert.ok(!out.includes("webui-key-0123456789"));
  assert.ok(!out.includes("abab"));
});

Deno.test("the command may follow options and a later --config wins, as a compiled binary needs", async () => {
  const path = await writeConfig(VALID);
  // A compiled binary puts its baked `--config` first.
  const ran = await butler([
    "--config",
    "/nonexistent/baked.yaml",
    "check",
    "--config",
    path,
  ]);
  assert.equal(ran.code, 0, ran.stderr);
  assert.match(ran.stdout, new RegExp(`config ${path} is valid`));
});

Deno.test("check: an invalid config exits 1 naming the field path and the line", async () => {
  const path = await writeConfig(
    VALID.replace("rate_limit: 60/min", "rate_limit: 60/mn")
      .replace("allow_management: true", "allow_managment: true"),
  );
  const ran = await butler(["check", "--config", path]);
  assert.equal(ran.code, 1);
  assert.equal(ran.stdout, "");
  assert.match(ran.stderr, /^butler: invalid config:\n/);
  assert.match(
    ran.stderr,
    new RegExp(`${path}:9: clients\\[0\\]\\.rate_limit: .*"60/mn"`),
  );
  assert.match(
    ran.stderr,
    new RegExp(
      `${path}:14: clients\\[1\\]\\.allow_managment: unknown field .*did you mean "allow_management"`,
    ),
  );
});

Deno.test("check: a missing environment variable names the variable and the field", async () => {
  const path = await writeConfig(
    VALID.replace("key: webui-key-0123456789", "key: ${CLI_TEST_UNSET_KEY}"),
  );
  const ran = await butler(["check", "--config", path], { env: {} });
  assert.equal(ran.code, 1);
  assert.match(ran.stderr, /CLI_TEST_UNSET_KEY/);
  assert.match(ran.stderr, /clients\[0\]\.key/);
});

Deno.test("gen-key: a fresh key whose key_sha256 authenticates it end to end", async () => {
  const first = await butler(["gen-key"]);
  const second = await butler(["gen-key"]);
  assert.equal(first.code, 0, first.stderr);
  const match = /^key: +(\S+)\nkey_sha256: +([0-9a-f]{64})\n$/.exec(
    first.stdout,
  );
  assert.ok(match, first.stdout);
  const [, key, digest] = match;
  assert.match(key, /^bk_[A-Za-z0-9_-]{43}$/);
  assert.equal(digest, await sha256Hex(key));
  assert.ok(!second.stdout.includes(key), "two runs gave the same key");

  const stack = await startStack(`
listen: 127.0.0.1:0
upstream: {{UPSTREAM}}
clients:
  - name: generated
    key_sha256: ${digest}
    allow_models: ["llama3.2"]
`);
  try {
    const ok = await fetch(`${stack.url}/api/generate`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}` },
      body: JSON.stringify({ model: "llama3.2", prompt: "hi", stream: false }),
    });
    assert.equal(ok.status, 200);
    assert.equal((await ok.json()).done, true);
    assert.equal(stack.sim.records[0].headers["x-butler-client"], "generated");

    // The digest itself is not a key.
    const wrong = await fetch(`${stack.url}/api/tags`, {
      headers: { authorization: `Bearer ${digest}` },
    });
    assert.equal(wrong.status, 401);
    await wrong.body?.cancel();
    assert.equal(stack.sim.records.length, 1);
  } finally {
    await stack.close();
  }
});

Deno.test("permissions: prints exact deno run and deno compile flags", async () => {
  const path = await writeConfig(`
listen: 0.0.0.0:9000
upstream: http://127.0.0.1:11500
clients:
  - name: a
    key: \${CLI_KEY_A}
    allow_models: ["*"]
  - name: b
    key: \${CLI_KEY_B}
    allow_models: ["*"]
`);
  const ran = await butler(["permissions", "--config", path], {
    env: { CLI_KEY_A: "a-key-0123456789abc", CLI_KEY_B: "b-key-0123456789abc" },
  });
  assert.equal(ran.code, 0, ran.stderr);
  const flags = "--allow-net=0.0.0.0:9000,127.0.0.1:11500 " +
    `--allow-read=${path} ` +
    "--allow-env=CLI_KEY_A,CLI_KEY_B,LOG_STREAM,LOG_TOKENS " +
    "--no-prompt --unstable-no-legacy-abort";
  assert.equal(
    ran.stdout,
    `deno run ${flags} main.ts --config ${path}\n` +
      `deno compile ${flags} --exclude-unused-npm --output butler main.ts ` +
      `--config ${path}\n`,
  );

  // The secrets need not be at hand: the same flags without them set.
  const withoutSecrets = await butler(["permissions", "--config", path], {
    env: {},
  });
  assert.equal(withoutSecrets.code, 0, withoutSecrets.stderr);
  assert.equal(withoutSecrets.stdout, ran.stdout);
});

Deno.test("hash-password: reads standard input and prints a bcrypt hash that verifies", async () => {
  const ran = await butler(["hash-password"], {
    stdin: "correct horse battery\n",
  });
  assert.equal(ran.code, 0, ran.stderr);
  const hash = ran.stdout.trim();
  assert.match(hash, /^\$2[aby]\$12\$[./A-Za-z0-9]{53}$/);
  assert.equal(await bcrypt.compare("correct horse battery", hash), true);
  assert.equal(await bcrypt.compare("correct horse", hash), false);
  assert.ok(!ran.stdout.includes("correct horse"));

  const empty = await butler(["hash-password"], { stdin: "" });
  assert.equal(empty.code, 2);
  assert.match(empty.stderr, /no password on standard input/);
});

Deno.test("healthcheck: 0 when /healthz answers 200, 1 otherwise", async () => {
  const sim = await startOllamaSim();
  const port = freePort();
  const path = await writeConfig(`
listen: 127.0.0.1:${port}
upstream: ${sim.url}
clients:
  - name: a
    key: health-key-0123456789
    allow_models: ["*"]
`);
  const running = await startButler({
    configPath: path,
    log: new Logger({ sink: () => {} }),
  });
  try {
    assert.equal((await butler(["healthcheck", "--config", path])).code, 0);

    await sim.close();
    const upstreamDown = await butler(["healthcheck", "--config", path]);
    assert.equal(upstreamDown.code, 1, "/healthz answers 503");
  } finally {
    await running.shutdown();
    await sim.close();
  }
  const butlerDown = await butler(["healthcheck", "--config", path]);
  assert.equal(butlerDown.code, 1, "nothing listens");
});

Deno.test("healthcheck: works on a wildcard listen address under the exact flags", async () => {
  const sim = await startOllamaSim();
  const port = freePort();
  const path = await writeConfig(`
listen: 0.0.0.0:${port}
upstream: ${sim.url}
clients:
  - name: a
    key: health-key-0123456789
    allow_models: ["*"]
`);
  const running = await startButler({
    configPath: path,
    log: new Logger({ sink: () => {} }),
  });
  try {
    const printed = await butler(["permissions", "--config", path]);
    const flags = flagsBeforeMain(printed.stdout.split("\n")[0]);
    const ran = await butler(["healthcheck", "--config", path], { flags });
    assert.equal(ran.code, 0, ran.stderr);
  } finally {
    await running.shutdown();
    await sim.close();
  }
});

Deno.test("usage: --help and --version exit 0, unknown arguments exit 2", async () => {
  const help = await butler(["--help"]);
  assert.equal(help.code, 0);
  for (
    const command of [
      "check",
      "gen-key",
      "hash-password",
      "permissions",
      "healthcheck",
    ]
  ) {
    assert.match(help.stdout, new RegExp(`^  ${command} `, "m"));
  }
  assert.match(help.stdout, /--config <path>/);

  const version = await butler(["--version"]);
  assert.equal(version.code, 0);
  assert.match(version.stdout, /^\d+\.\d+\.\d+/);

  for (
    const args of [
      ["frobnicate"],
      ["check", "extra"],
      ["--confg", "x.yaml"],
      ["check", "--config"],
      ["check", "gen-key"],
    ]
  ) {
    const ran = await butler(args);
    assert.equal(ran.code, 2, args.join(" "));
    assert.equal(ran.stdout, "");
    assert.match(ran.stderr, /^butler: /);
    assert.match(ran.stderr, /usage: butler \[command\] \[--config <path>\]/);
  }
});

Deno.test("serve: a listen address in use or an unreadable TLS file stops startup with one line naming it", async () => {
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (taken.addr as Deno.NetAddr).port;
  try {
    const inUse = await butler([
      "--config",
      await writeConfig(`
listen: 127.0.0.1:${port}
upstream: http://127.0.0.1:11434
clients:
  - name: a
    key: busy-key-0123456789
    allow_models: ["*"]
`),
    ]);
    assert.equal(inUse.code, 1, inUse.stderr);
    assert.equal(
      inUse.stderr.trim(),
      `butler: listen 127.0.0.1:${port}: the address is already in use ` +
        "(is another Butler running?)",
    );
  } finally {
    taken.close();
  }

  const dir = await Deno.makeTempDir({ prefix: "butler-cli-tls-" });
  try {
    const missing = `${dir}/missing.pem`;
    const garbage = `${dir}/garbage.pem`;
    await Deno.writeTextFile(garbage, "not a certificate\n");
    const config = (cert: string) =>
      writeConfig(`
listen: 127.0.0.1:${freePort()}
upstream: http://127.0.0.1:11434
tls:
  cert: ${cert}
  key: ${garbage}
clients:
  - name: a
    key: tls-key-0123456789ab
    allow_models: ["*"]
`);
    const unreadable = await butler(["--config", await config(missing)]);
    assert.equal(unreadable.code, 1, unreadable.stderr);
    assert.match(
      unreadable.stderr.trim(),
      new RegExp(`^butler: tls\\.cert ${missing}: cannot be read \\(.+\\)$`),
    );
    const unusable = await butler(["--config", await config(garbage)]);
    assert.equal(unusable.code, 1, unusable.stderr);
    assert.match(
      unusable.stderr.trim(),
      /^butler: tls .*garbage\.pem.*: the certificate and key cannot be used \(.+\)$/,
    );
    for (const run of [unreadable, unusable]) {
      assert.doesNotMatch(run.stderr, /Uncaught|\n\s+at /);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
