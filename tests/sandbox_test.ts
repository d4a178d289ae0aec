/**
 * Butler's permission sandbox, checked on the real program: `main.ts` runs
 * as a child process under exactly the flags `main.ts permissions` prints,
 * serves, and from inside that sandbox everything but its listen address,
 * its upstream and its config file is refused.
 */

import assert from "node:assert/strict";
import bcrypt from "bcryptjs";
import { startOllamaSim } from "./sim/ollama_sim.ts";
import type { ProbeLine } from "./support/sandbox_probe.ts";
import { compilePolicy } from "../src/config/load.ts";
import { reloadPermissions } from "../src/permissions.ts";
import {
  flagsBeforeMain,
  freePort,
  ROOT,
  runDeno,
  spawnDeno,
} from "./support/butler_process.ts";

const KEY = "sandbox-key-0123456789";

/** The flags of the `deno run …` line `main.ts permissions` prints. */
async function permissionsLine(
  configPath: string,
  env: Record<string, string>,
): Promise<{ run: string; compile: string }> {
  const result = await runDeno(
    ["run", "-A", "main.ts", "permissions", "--config", configPath],
    env,
  );
  assert.equal(result.code, 0, result.stderr);
  const lines = result.stdout.trim().split("\n");
  const run = lines.find((l) => l.startsWith("deno run "));
  const compile = lines.find((l) => l.startsWith("deno compile "));
  assert.ok(run && compile, result.stdout);
  return { run, compile };
}

/** The words between `deno run|compile` and the program, minus --output. */
function flagsOf(commandLine: string): string[] {
  const flags = flagsBeforeMain(commandLine);
  const output = flags.indexOf("--output");
  if (output >= 0) flags.splice(output, 2);
  return flags;
}

/** `main.ts` under the flags of the printed `deno run` line `run`. */
function spawnButler(
  run: string,
  configPath: string,
  env: Record<string, string>,
): Child {
  return spawn(
    ["run", ...flagsOf(run), "main.ts", "--config", configPath],
    env,
  );
}

/** A child process whose stdout is collected line by line. */
interface Child {
  readonly lines: string[];
  /** Resolves with the first line (so far or later) that `match` accepts. */
  waitFor(
    match: (line: string) => boolean,
    timeoutMs?: number,
  ): Promise<string>;
  /** Sends `signal` to the child. */
  signal(signal: Deno.Signal): void;
  stop(): Promise<Deno.CommandStatus>;
}

function spawn(args: string[], env: Record<string, string>): Child {
  const process = spawnDeno(args, env);
  const lines: string[] = [];
  let wake = () => {};
  const reading = (async () => {
    let rest = "";
    for await (
      const text of process.stdout.pipeThrough(new TextDecoderStream())
    ) {
      const parts = (rest + text).split("\n");
      rest = parts.pop()!;
      lines.push(...parts);
      wake();
    }
  })();
  const stderr = new Response(process.stderr).text();
  return {
    lines,
    async waitFor(match, timeoutMs = 15_000) {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        const found = lines.find(match);
        if (found !== undefined) return found;
        const woken = new Promise<void>((resolve) => wake = resolve);
        let timer: ReturnType<typeof setTimeout> | undefined;
        const timeout = new Promise<void>((resolve) =>
          timer = setTimeout(resolve, 200)
        );
        await Promise.race([woken, timeout]);
        clearTimeout(timer);
      }
      assert.fail(
        `no matching line within ${timeoutMs} ms; stdout:\n${
          lines.join("\n")
        }\nstderr:\n${await Promise.race([stderr, ""])}`,
      );
    },
    signal(signal) {
      process.kill(signal);
    },
    async stop() {
      try {
        process.kill("SIGTERM");
      } catch {
        // already gone
      }
      const status = await process.status;
      await reading;
      await stderr;
      return status;
    },
  };
}

function parsed(line: string): Record<string, unknown> {
  return JSON.parse(line);
}

/**
 * A simulator, a config in a temporary directory whose key comes from the
 * environment, a secret file next to it, and a listener on a port Butler
 * must not reach (it counts the connections it accepts).
 */
async function withSetup(
  fn: (setup: {
    sim: Awaited<ReturnType<typeof startOllamaSim>>;
    configPath: string;
    port: number;
    env: Record<string, string>;
    secretPath: string;
    forbiddenPort: number;
    forbiddenAccepted: () => number;
  }) => Promise<void>,
) {
  const sim = await startOllamaSim({ chunkDelayMs: 1 });
  const dir = await Deno.makeTempDir({ prefix: "butler-sandbox-" });
  const port = freePort();
  const configPath = `${dir}/butler.yaml`;
  await Deno.writeTextFile(
    configPath,
    `listen: 127.0.0.1:${port}
upstream: ${sim.url}
clients:
  - name: app
    key: \${SANDBOX_KEY}
    allow_models: ["llama3.2"]
`,
  );
  const secretPath = `${dir}/secret.txt`;
  await Deno.writeTextFile(secretPath, "not for Butler");

  const forbidden = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let accepted = 0;
  const accepting = (async () => {
    for await (const conn of forbidden) {
      accepted++;
      conn.close();
    }
  })();

  try {
    await fn({
      sim,
      configPath,
      port,
      env: { SANDBOX_KEY: KEY },
      secretPath,
      forbiddenPort: (forbidden.addr as Deno.NetAddr).port,
      forbiddenAccepted: () => accepted,
    });
  } finally {
    forbidden.close();
    await accepting.catch(() => {});
    await sim.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("permissions prints only the config's addresses, file and variables", async () => {
  await withSetup(async ({ sim, configPath, port, env }) => {
    const { run, compile } = await permissionsLine(configPath, env);
    const flags = [
      `--allow-net=127.0.0.1:${port},127.0.0.1:${sim.port}`,
      `--allow-read=${configPath}`,
      "--allow-env=LOG_STREAM,LOG_TOKENS,SANDBOX_KEY",
      "--no-prompt",
      "--unstable-no-legacy-abort",
    ];
    assert.deepEqual(flagsOf(run), flags);
    // The binary embeds only the npm packages main.ts imports.
    assert.deepEqual(flagsOf(compile), [...flags, "--exclude-unused-npm"]);
  });
});

Deno.test("under exactly those flags the real server serves and warns of nothing", async () => {
  await withSetup(async ({ sim, configPath, port, env }) => {
    const { run } = await permissionsLine(configPath, env);
    const child = spawnButler(run, configPath, env);
    try {
      const held = parsed(
        await child.waitFor((l) => l.includes('"msg":"permissions"')),
      );
      await child.waitFor((l) => l.includes('"msg":"listening"'));
      const grants = held.held as Record<string, string>;
      for (const kind of ["net", "read", "write", "env"]) {
        const [name] = Object.keys(grants).filter((k) => k.startsWith(kind));
        assert.notEqual(grants[name], "granted", `${name} is unrestricted`);
      }
      for (const kind of ["run", "ffi", "sys"]) {
        assert.notEqual(grants[kind], "granted", `${kind} is granted`);
      }

      const response = await fetch(`http://127.0.0.1:${port}/api/chat`, {
        method: "POST",
        headers: { authorization: `Bearer ${KEY}` },
        body: JSON.stringify({
          model: "llama3.2",
          messages: [{ role: "user", content: "hello" }],
        }),
      });
      assert.equal(response.status, 200);
      const lines = (await response.text()).trim().split("\n");
      assert.equal(JSON.parse(lines.at(-1)!).done, true);
      assert.equal(sim.records.length, 1);
      assert.deepEqual(sim.records[0].acted?.texts, ["hello"]);

      const health = await fetch(`http://127.0.0.1:${port}/healthz`);
      assert.equal(health.status, 200);
      await health.body?.cancel();
    } finally {
      const status = await child.stop();
      assert.equal(status.code, 0, "SIGTERM is a clean shutdown");
    }
    const warnings = child.lines.filter((l) => l.includes('"level":"warn"'));
    assert.deepEqual(warnings, []);
    assert.ok(!child.lines.some((l) => l.includes("broader")));
    assert.ok(!child.lines.some((l) => l.includes(KEY)), "the key is logged");
  });
});

Deno.test("under exactly those flags a password login runs its bcrypt on a worker", async () => {
  const sim = await startOllamaSim({ chunkDelayMs: 1 });
  const dir = await Deno.makeTempDir({ prefix: "butler-sandbox-login-" });
  const port = freePort();
  const configPath = `${dir}/butler.yaml`;
  const env = { SANDBOX_SECRET: "s".repeat(40) };
  await Deno.writeTextFile(
    configPath,
    `listen: 127.0.0.1:${port}
upstream: ${sim.url}
auth:
  mode: jwt_standalone
  jwt_secret: \${SANDBOX_SECRET}
users:
  - name: alice
    password_hash: "${bcrypt.hashSync("alice-password", 4)}"
    allow_models: ["llama3.2"]
`,
  );
  const { run } = await permissionsLine(configPath, env);
  const child = spawnButler(run, configPath, env);
  try {
    await child.waitFor((l) => l.includes('"msg":"listening"'));
    const login = (password: string) =>
      fetch(`http://127.0.0.1:${port}/auth/login`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ username: "alice", password }),
      });
    const wrong = await login("guess");
    assert.equal(wrong.status, 401);
    await wrong.body?.cancel();
    const right = await login("alice-password");
    assert.equal(right.status, 200);
    const { token } = await right.json();
    const chat = await fetch(`http://127.0.0.1:${port}/api/chat`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}` },
      body: JSON.stringify({
        model: "llama3.2",
        messages: [{ role: "user", content: "hi" }],
        stream: false,
      }),
    });
    assert.equal(chat.status, 200);
    await chat.body?.cancel();
  } finally {
    const status = await child.stop();
    assert.equal(status.code, 0);
    await sim.close();
    await Deno.remove(dir, { recursive: true });
  }
  // The worker ran inside the sandbox: no fallback to the main thread.
  assert.ok(
    !child.lines.some((l) => l.includes("password checks run on the main")),
    child.lines.join("\n"),
  );
  assert.ok(child.lines.some((l) => l.includes('"msg":"login"')));
});

Deno.test("inside the sandbox only the listen address, upstream and config are reachable", async () => {
  await withSetup(
    async (
      { sim, configPath, env, secretPath, forbiddenPort, forbiddenAccepted },
    ) => {
      const { run } = await permissionsLine(configPath, env);
      const result = await runDeno([
        "run",
        ...flagsOf(run),
        "tests/support/sandbox_probe.ts",
        "--config",
        configPath,
        "--forbidden-port",
        String(forbiddenPort),
        "--forbidden-file",
        secretPath,
      ], env);
      assert.equal(result.code, 0, result.stderr);
      const outcomes = Object.fromEntries(
        result.stdout.trim().split("\n").map((l) => {
          const line: ProbeLine = JSON.parse(l);
          return [line.attempt, line];
        }),
      );

      for (
        const name of [
          "fetch the upstream",
          "fetch own /healthz",
          "read the config",
        ]
      ) {
        assert.equal(
          outcomes[name]?.outcome,
          "allowed",
          JSON.stringify(outcomes[name]),
        );
      }
      const refused = [
        "fetch another port",
        "connect to another port",
        "fetch the upstream by another name",
        "listen on another port",
        "read another file",
        "list the config's directory",
        "read /etc/passwd",
        "read env HOME",
        "write a file",
        "run a program",
        "read system info",
        "load a native library",
      ];
      for (const name of refused) {
        const line = outcomes[name];
        assert.equal(line?.outcome, "refused", JSON.stringify(line));
        assert.equal(line.error, "NotCapable");
      }
      assert.equal(
        Object.keys(outcomes).length,
        refused.length + 3,
        result.stdout,
      );

      // The refusals happened before any connection or file access.
      assert.equal(forbiddenAccepted(), 0);
      await assert.rejects(Deno.stat(`${secretPath}.written`));
      assert.ok(
        sim.records.every((r) => r.path === "/api/version"),
        "only the probe's and /healthz's version checks reached the upstream",
      );
    },
  );
});

Deno.test("a reload needs the new upstream, issuer and variables, not the new start-only files", async () => {
  const running = await compilePolicy(
    `listen: 127.0.0.1:8080
upstream: http://127.0.0.1:11434
tls: {cert: /etc/butler/cert.pem, key: /etc/butler/key.pem}
state_file: /var/lib/butler/state.json
clients: [{name: app, key: "\${OLD_KEY}"}]
`,
    { path: "/etc/butler/butler.yaml", env: () => KEY },
  );
  const next = await compilePolicy(
    `listen: 127.0.0.1:9090
upstream: http://127.0.0.1:11435
tls: {cert: /tmp/other-cert.pem, key: /tmp/other-key.pem}
state_file: /tmp/other/state.json
auth:
  mode: either
  oidc:
    issuer: https://id.example.com/realms/home
    client_id: butler
    role_claim_path: roles
clients: [{name: app, key: "\${NEW_KEY}"}]
role_policies: {reader: {allow_models: ["*"]}}
`,
    { path: "/etc/butler/butler.yaml", env: () => KEY },
  );
  assert.deepEqual(reloadPermissions(next, running), {
    net: ["127.0.0.1:8080", "127.0.0.1:11435", "id.example.com:443"],
    read: [
      "/etc/butler/butler.yaml",
      "/etc/butler/cert.pem",
      "/etc/butler/key.pem",
      "/var/lib/butler",
    ],
    write: ["/var/lib/butler"],
    env: ["LOG_STREAM", "LOG_TOKENS", "NEW_KEY"],
  });
});

Deno.test("SIGHUP onto an upstream outside --allow-net keeps the old config", async () => {
  await withSetup(async ({ sim, configPath, port, env }) => {
    const { run } = await permissionsLine(configPath, env);
    const original = await Deno.readTextFile(configPath);
    const other = await startOllamaSim({ chunkDelayMs: 1 });
    const child = spawnButler(run, configPath, env);
    const chat = async (model: string) => {
      const response = await fetch(`http://127.0.0.1:${port}/api/chat`, {
        method: "POST",
        headers: { authorization: `Bearer ${KEY}` },
        body: JSON.stringify({
          model,
          messages: [{ role: "user", content: "hello" }],
          stream: false,
        }),
      });
      await response.body?.cancel();
      return response.status;
    };
    const chats = (of: typeof sim) =>
      of.records.filter((r) => r.path === "/api/chat").length;
    try {
      await child.waitFor((l) => l.includes('"msg":"listening"'));
      assert.equal(await chat("llama3.2"), 200);

      // The new upstream's port is not in the --allow-net Butler started with.
      await Deno.writeTextFile(
        configPath,
        original.replace(sim.url, other.url),
      );
      child.signal("SIGHUP");
      const failed = parsed(
        await child.waitFor((l) => l.includes('"msg":"config reload')),
      );
      const missing = `net 127.0.0.1:${other.port}`;
      assert.equal(
        failed.msg,
        "config reload failed; keeping the previous config",
      );
      assert.equal(failed.level, "error");
      assert.deepEqual(failed.missing, [missing]);
      assert.match(String(failed.error), new RegExp(missing));
      assert.match(String(failed.error), /main\.ts permissions/);
      assert.ok(!child.lines.some((l) => l.includes('"config reloaded"')));

      // Still served by the old config and the old upstream.
      assert.equal(await chat("llama3.2"), 200);
      assert.equal(chats(sim), 2);
      assert.equal(other.records.length, 0);
      const health = await fetch(`http://127.0.0.1:${port}/healthz`);
      assert.equal(health.status, 200);
      await health.body?.cancel();
      const metrics = await fetch(`http://127.0.0.1:${port}/metrics`);
      assert.match(
        await metrics.text(),
        /butler_config_reloads_total\{result="failure"\} 1\n/,
      );

      // A change the held permissions cover still reloads; `listen` is read
      // at start only, so a new one is no missing permission.
      await Deno.writeTextFile(
        configPath,
        original.replace('["llama3.2"]', '["qwen2.5"]')
          .replace(`127.0.0.1:${port}`, `127.0.0.1:${freePort()}`),
      );
      child.signal("SIGHUP");
      await child.waitFor((l) => l.includes('"msg":"config reloaded"'));
      assert.equal(await chat("llama3.2"), 403);
      assert.equal(await chat("qwen2.5:7b"), 200);
      assert.equal(chats(sim), 3);
      assert.equal(other.records.length, 0);
    } finally {
      const status = await child.stop();
      await other.close();
      assert.equal(status.code, 0, "SIGTERM is a clean shutdown");
    }
  });
});

Deno.test("with --allow-all Butler warns that it holds more than it needs", async () => {
  await withSetup(async ({ configPath, port, env }) => {
    const child = spawn([
      "run",
      "--allow-all",
      "--unstable-no-legacy-abort",
      "main.ts",
      "--config",
      configPath,
    ], env);
    try {
      const warning = parsed(
        await child.waitFor((l) =>
          l.includes('"msg":"permissions broader than this config needs"')
        ),
      );
      assert.equal(warning.level, "warn");
      assert.deepEqual(warning.broader, [
        "net (any host)",
        "read (any path)",
        "write (any path)",
        "env (any variable)",
        "run",
        "ffi",
        "sys",
        "write .",
      ]);
      await child.waitFor((l) => l.includes('"msg":"listening"'));
      const health = await fetch(`http://127.0.0.1:${port}/healthz`);
      assert.equal(health.status, 200, "it still serves");
      await health.body?.cancel();
    } finally {
      await child.stop();
    }
  });
});

Deno.test("deno task start runs with exactly what permissions prints for the shipped butler.yaml", async () => {
  const denoJson = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`));
  const env = { BUTLER_KEY: "shipped-config-key-0123456789" };
  const { run, compile } = await permissionsLine("./butler.yaml", env);

  const start: string = denoJson.tasks.start;
  assert.equal(start, run);
  assert.deepEqual(flagsOf(start), flagsOf(run));

  const compileTask: string = denoJson.tasks.compile;
  assert.deepEqual(flagsOf(compileTask), flagsOf(compile));
  assert.match(compileTask, / main\.ts --config \.\/butler\.yaml$/);
});
