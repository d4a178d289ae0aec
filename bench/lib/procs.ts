/**
 * Child processes for benchmarks: the Ollama simulator, nginx and Butler,
 * each on a free loopback port, stopped by process id. Also reads a
 * process's resident memory and CPU time from `/proc`.
 *
 * @module
 */

/** A child process listening on a loopback port. */
export interface Service {
  readonly name: string;
  readonly pid: number;
  readonly port: number;
  readonly url: string;
  /** Everything the process wrote to stderr so far. */
  stderr(): string;
  /** Stops the process (SIGTERM, then SIGKILL after 3 s) and waits for it. */
  stop(): Promise<void>;
}

const ROOT = new URL("../../", import.meta.url).pathname;

/** A free TCP port on 127.0.0.1 (bound, read, released). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** Resolves once `port` accepts connections, or throws after `timeoutMs`. */
export async function waitForPort(
  port: number,
  options: { timeoutMs?: number; name?: string } = {},
): Promise<void> {
  const deadline = Date.now() + (options.timeoutMs ?? 15_000);
  while (Date.now() < deadline) {
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conn.close();
      return;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  throw new Error(`${options.name ?? "service"}: port ${port} never opened`);
}

function spawn(
  name: string,
  port: number,
  command: string,
  args: string[],
  options: { cwd?: string; env?: Record<string, string> } = {},
): Service {
  const child = new Deno.Command(command, {
    args,
    cwd: options.cwd ?? ROOT,
    env: options.env,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let errText = "";
  const decoder = new TextDecoder();
  const drained = (async () => {
    for await (const chunk of child.stderr) {
      // Keep the tail only: a long run must not grow this without bound.
      errText = (errText + decoder.decode(chunk)).slice(-64 * 1024);
    }
  })();
  let stopped: Promise<void> | undefined;
  return {
    name,
    pid: child.pid,
    port,
    url: `http://127.0.0.1:${port}`,
    stderr: () => errText,
    stop() {
      stopped ??= (async () => {
        try {
          child.kill("SIGTERM");
        } catch {
          // already gone
        }
        const timer = setTimeout(() => {
          try {
            child.kill("SIGKILL");
          } catch {
            // already gone
          }
        }, 3000);
        await child.status;
        clearTimeout(timer);
        await drained;
      })();
      return stopped;
    },
  };
}

/** Options for {@linkcode startSimulator}. */
export interface SimulatorOptions {
  port?: number;
  chunks?: number;
  chunkDelayMs?: number;
  headerDelayMs?: number;
}

/** Starts `tests/sim/run_sim.ts` as a child process. */
export async function startSimulator(
  options: SimulatorOptions = {},
): Promise<Service> {
  const port = options.port ?? freePort();
  const args = [
    "run",
    "--no-lock",
    "--allow-net=127.0.0.1",
    "tests/sim/run_sim.ts",
    "--port",
    String(port),
    "--chunks",
    String(options.chunks ?? 5),
    "--chunk-delay-ms",
    String(options.chunkDelayMs ?? 0),
    "--header-delay-ms",
    String(options.headerDelayMs ?? 0),
  ];
  const service = spawn("simulator", port, Deno.execPath(), args);
  await waitForPort(port, { name: "simulator" });
  return service;
}

/** Starts `bench/lib/bare_proxy.ts` (no policy) in front of `upstream`. */
export async function startBareProxy(upstream: string): Promise<Service> {
  const port = freePort();
  const service = spawn("bare", port, Deno.execPath(), [
    "run",
    "--no-lock",
    "--allow-net=127.0.0.1",
    "bench/lib/bare_proxy.ts",
    String(port),
    upstream,
  ]);
  await waitForPort(port, { name: "bare proxy" });
  return service;
}

/** Starts `bench/lib/stamp_upstream.ts`, the time-stamping stream upstream. */
export async function startStampUpstream(): Promise<Service> {
  const port = freePort();
  const service = spawn("stamp", port, Deno.execPath(), [
    "run",
    "--no-lock",
    "--allow-net=127.0.0.1",
    "bench/lib/stamp_upstream.ts",
    String(port),
  ]);
  await waitForPort(port, { name: "stamp upstream" });
  return service;
}

/**
 * Starts nginx as a plain streaming reverse proxy in front of `upstream`:
 * one worker, keep-alive to the upstream, HTTP/1.1, no buffering. Config,
 * pid file, logs and temp paths all live in a fresh temporary directory.
 */
export async function startNginx(upstreamPort: number): Promise<Service> {
  const port = freePort();
  const dir = await Deno.makeTempDir({ prefix: "butler-bench-nginx-" });
  const template = await Deno.readTextFile(
    new URL("../nginx.conf.template", import.meta.url),
  );
  const conf = template
    .replaceAll("{{DIR}}", dir)
    .replaceAll("{{PORT}}", String(port))
    .replaceAll("{{UPSTREAM_PORT}}", String(upstreamPort));
  await Deno.writeTextFile(`${dir}/nginx.conf`, conf);
  const service = spawn("nginx", port, "/usr/sbin/nginx", [
    "-p",
    dir,
    "-c",
    `${dir}/nginx.conf`,
    "-e",
    `${dir}/error.log`,
    "-g",
    "daemon off;",
  ]);
  await waitForPort(port, { name: "nginx" });
  // The master forks one worker; that worker is the process that proxies.
  const worker = await nginxWorkerPid(service.pid);
  return {
    ...service,
    pid: worker ?? service.pid,
    async stop() {
      await service.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

async function nginxWorkerPid(master: number): Promise<number | undefined> {
  for (let i = 0; i < 40; i++) {
    try {
      const text = await Deno.readTextFile(
        `/proc/${master}/task/${master}/children`,
      );
      const pid = Number(text.trim().split(/\s+/)[0]);
      if (pid > 0) return pid;
    } catch {
      // not yet
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return undefined;
}

/** The API key the benchmark's Butler config accepts. */
export const BENCH_KEY = "bench-key-0123456789abcdef";

/**
 * A realistic policy: key auth, model allow and deny rules, a rate limit far
 * above what the benchmark sends, five prompt patterns and a generation cap.
 */
export function benchPolicy(options: { port: number; upstream: string }) {
  return `listen: 127.0.0.1:${options.port}
upstream: ${options.upstream}
upstream_timeout: 10m
clients:
  - name: bench
    key: ${BENCH_KEY}
    allow_models: ["llama3.2", "qwen2.5:7b", "nomic-embed-text"]
    deny_models: ["llama3.2:1b", "gpt-oss:120b-cloud"]
    rate_limit: 100000000/min
    max_predict: 4096
    max_ctx: 32768
    cap_mode: clamp
    deny_prompt_patterns:
      - "(?i)ignore (all )?previous instructions"
      - "(?i)system prompt"
      - "(?i)\\\\bjailbreak\\\\b"
      - "BEGIN (RSA|OPENSSH) PRIVATE KEY"
      - "(?i)password\\\\s*[:=]"
`;
}

/**
 * Starts Butler as a child process with exactly the flags
 * `main.ts permissions` prints for its config. Its log goes to /dev/null,
 * while nginx writes its access log to a file: both log every request.
 */
export async function startButlerProcess(
  options: { upstream: string; config?: string; extraFlags?: string[] },
): Promise<Service & { configPath: string }> {
  const port = freePort();
  const dir = await Deno.makeTempDir({ prefix: "butler-bench-" });
  const configPath = `${dir}/butler.yaml`;
  await Deno.writeTextFile(
    configPath,
    options.config?.replaceAll("{{PORT}}", String(port)) ??
      benchPolicy({ port, upstream: options.upstream }),
  );
  const flags = await butlerFlags(configPath);
  const service = spawn("butler", port, Deno.execPath(), [
    "run",
    "--no-lock",
    ...(options.extraFlags ?? []),
    ...flags,
    "main.ts",
    "--config",
    configPath,
  ]);
  await waitForPort(port, { name: "butler" });
  return {
    ...service,
    configPath,
    async stop() {
      await service.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

async function butlerFlags(configPath: string): Promise<string[]> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--no-lock",
      "--allow-read",
      "--allow-env",
      "main.ts",
      "permissions",
      "--config",
      configPath,
    ],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(output.stdout);
  const line = text.split("\n").find((l) => l.startsWith("deno run "));
  if (!output.success || line === undefined) {
    throw new Error(
      `main.ts permissions failed: ${new TextDecoder().decode(output.stderr)}`,
    );
  }
  // "deno run <flags> main.ts --config <path>"
  const words = line.split(" ");
  return words.slice(2, words.indexOf("main.ts"));
}

/** Resident memory of `pid` in bytes (VmRSS), or NaN when it is gone. */
export function rssBytes(pid: number): number {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const match = /VmRSS:\s+(\d+) kB/.exec(status);
    return match ? Number(match[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}

/** CPU time (user + system) `pid` has used, in seconds, or NaN. */
export function cpuSeconds(pid: number): number {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields overall (clock ticks, 100 per second on Linux).
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(rest[11]) + Number(rest[12])) / 100;
  } catch {
    return NaN;
  }
}

/** Open file descriptors of `pid`, or NaN. */
export function openFds(pid: number): number {
  try {
    let count = 0;
    for (const _ of Deno.readDirSync(`/proc/${pid}/fd`)) count++;
    return count;
  } catch {
    return NaN;
  }
}
