/**
 * Puts Butler on a socket: loads the config, serves the handler, reloads on
 * SIGHUP, drains on SIGTERM/SIGINT. Everything that lives for the whole
 * process (counters, limiters, the log) is made here once.
 *
 * @module
 */

import type { OidcSettings, Policy } from "./config/policy.ts";
import { loadPolicy } from "./config/load.ts";
import { createHandler } from "./server.ts";
import { createRuntime, type Runtime, type Shared } from "./runtime.ts";
import { RateLimiter } from "./policy/rate_limiter.ts";
import { ConcurrencyLimiter } from "./policy/concurrency.ts";
import { LoginThrottle } from "./auth/login_throttle.ts";
import { OidcVerifier, type OidcVerifierOptions } from "./auth/oidc.ts";
import { Logger } from "./observe/log.ts";
import { butlerMetrics, Registry } from "./observe/metrics.ts";
import {
  heldPermissions,
  missingPermissions,
  reloadPermissions,
  requiredPermissions,
} from "./permissions.ts";
import { TokenBudgets } from "./policy/budgets.ts";
import {
  readUsage,
  startUsageSaver,
  StateFileError,
  type UsageSaver,
  writeUsage,
} from "./policy/budget_store.ts";
import { VERSION } from "./version.ts";

/**
 * How long shutdown waits, after the grace period, for connections it has
 * cancelled to close before it saves the usage and stops anyway.
 */
const AFTER_GRACE_MS = 2000;

/**
 * Butler cannot start: its listen address or a TLS file cannot be used. The
 * message names the config field, its value and what is wrong.
 */
export class StartupError extends Error {
  /** The config field, e.g. `listen` or `tls.cert`. */
  readonly field: string;

  /** Builds the error for `field`, whose `value` has `problem`. */
  constructor(field: string, value: string, problem: string) {
    super(`${field} ${value}: ${problem}`);
    this.name = "StartupError";
    this.field = field;
  }
}

/**
 * A reloaded config needs permissions the running process does not hold
 * (another upstream or identity provider, another `${VAR}`). Deno grants
 * permissions at start only, so the fix is a restart with new flags.
 */
class MissingPermissionsError extends Error {
  /** What is missing, e.g. `net 127.0.0.1:11435`. */
  readonly missing: readonly string[];

  constructor(missing: readonly string[]) {
    super(
      `the new config needs permissions this process does not hold: ${
        missing.join(", ")
      }; restart Butler with the flags \`main.ts permissions\` prints ` +
        "for the new config",
    );
    this.name = "MissingPermissionsError";
    this.missing = missing;
  }
}

/** A running Butler. */
export interface RunningButler {
  /** The address it listens on. */
  readonly addr: Deno.NetAddr;
  /** Re-reads the config; keeps the old one when the new one is invalid. */
  reload(): Promise<boolean>;
  /** Stops accepting, lets requests finish for the grace period, cancels the rest. */
  shutdown(): Promise<void>;
  /** Resolves when the server has stopped and the usage is saved. */
  readonly finished: Promise<void>;
}

/** Options for `startButler`. */
export interface StartOptions {
  readonly configPath: string;
  /** Overrides the config's listen port (tests use 0). */
  readonly port?: number;
  /** Install SIGHUP/SIGTERM/SIGINT handlers (the command line does). */
  readonly handleSignals?: boolean;
  readonly log?: Logger;
  /**
   * Timings of OIDC discovery and key fetching (tests shorten the backoff
   * and the key refetch cooldown). Default: the verifier's own defaults.
   */
  readonly oidc?: OidcVerifierOptions;
  /**
   * How long a request body Butler reads may take to arrive before 408
   * (tests shorten it). Default `DEFAULT_BODY_READ_TIMEOUT_MS`, 60 s.
   */
  readonly bodyReadTimeoutMs?: number;
}

function oidcFor(
  policy: Policy,
  options: OidcVerifierOptions = {},
): OidcVerifier | undefined {
  if (policy.auth.oidc === undefined) return undefined;
  const verifier = new OidcVerifier(policy.auth.oidc, options);
  verifier.start();
  return verifier;
}

/** True when both are set and describe the same provider and claims. */
function sameOidcSettings(
  a: OidcSettings | undefined,
  b: OidcSettings | undefined,
): boolean {
  if (a === undefined || b === undefined) return false;
  return a.issuer.href === b.issuer.href && a.clientId === b.clientId &&
    a.roleClaimPath.join(".") === b.roleClaimPath.join(".") &&
    a.usernameClaim === b.usernameClaim &&
    a.refreshIntervalMs === b.refreshIntervalMs;
}

/** Loads the config and starts serving. Throws ConfigError on a bad config. */
export async function startButler(
  options: StartOptions,
): Promise<RunningButler> {
  const log = options.log ?? new Logger();
  const policy = await loadPolicy(options.configPath);
  // Usage survives restarts; an unreadable state file stops startup.
  const usage = policy.stateFile === undefined
    ? undefined
    : await readUsage(policy.stateFile);
  if (policy.stateFile !== undefined && usage === undefined) {
    log.warn("no state file; every token budget starts from zero", {
      state_file: policy.stateFile,
    });
  }
  const budgets = new TokenBudgets({ timeZone: policy.budgetTimezone, usage });

  const registry = new Registry();
  const metrics = butlerMetrics(registry);
  metrics.buildInfo.set({ version: VERSION, deno: Deno.version.deno }, 1);
  const shared: Shared = {
    rate: new RateLimiter(),
    concurrency: new ConcurrencyLimiter(),
    throttle: new LoginThrottle(),
    log,
    metrics,
    renderMetrics: () => registry.render(),
    budgets,
  };
  let runtime: Runtime = createRuntime(policy, {
    oidc: oidcFor(policy, options.oidc),
  });
  const shutdownController = new AbortController();
  const handler = createHandler(() => runtime, shared, {
    shutdownSignal: shutdownController.signal,
    bodyReadTimeoutMs: options.bodyReadTimeoutMs,
  });

  await logPermissions(policy, log);
  const saver = await startSavingUsage(policy, { budgets, log });

  let tls = {};
  let server: Deno.HttpServer;
  let listening: (addr: Deno.NetAddr) => void;
  const listened = new Promise<Deno.NetAddr>((resolve) => listening = resolve);
  try {
    if (policy.tls !== undefined) {
      tls = {
        cert: await readTlsFile("tls.cert", policy.tls.certPath),
        key: await readTlsFile("tls.key", policy.tls.keyPath),
      };
    }
    server = serveOn(policy, options, tls, {
      onListen: (addr) => listening(addr),
      handler,
      log,
    });
  } catch (error) {
    saver?.stop();
    throw error;
  }

  const addr = await listened;
  logConfigWarnings(policy, log);
  log.info("listening", {
    address: `${addr.hostname}:${addr.port}`,
    upstream: policy.upstream.origin,
    tls: policy.tls !== undefined,
    clients: policy.clients.length,
    version: VERSION,
  });

  async function reload(): Promise<boolean> {
    try {
      const next = await loadPolicy(options.configPath);
      // A config this process's permissions cannot serve would fail every
      // request (and /healthz) with NotCapable: keep the old one instead.
      const missing = missingPermissions(reloadPermissions(next, policy));
      if (missing.length > 0) throw new MissingPermissionsError(missing);
      const previous = runtime;
      // Same provider settings: keep the keys already held, so a reload
      // while the provider is down does not lock its users out.
      const keep = sameOidcSettings(
        previous.policy.auth.oidc,
        next.auth.oidc,
      );
      runtime = createRuntime(next, {
        oidc: keep ? previous.oidc : oidcFor(next, options.oidc),
      });
      if (!keep) previous.oidc?.stop();
      metrics.configReloads.inc({ result: "success" });
      log.info("config reloaded", { clients: next.clients.length });
      logConfigWarnings(next, log);
      const startOnly = startOnlyChanges(policy, next);
      if (startOnly.length > 0) {
        log.warn("these fields change at restart only; still in use", {
          fields: startOnly,
          listen: `${policy.listen.hostname}:${policy.listen.port}`,
          tls: policy.tls !== undefined,
          state_file: policy.stateFile,
          budget_timezone: policy.budgetTimezone,
        });
      }
      return true;
    } catch (error) {
      metrics.configReloads.inc({ result: "failure" });
      log.error("config reload failed; keeping the previous config", {
        error: describeError(error),
        ...(error instanceof MissingPermissionsError
          ? { missing: error.missing }
          : {}),
      });
      return false;
    }
  }

  let stopping: Promise<void> | undefined;
  function shutdown(): Promise<void> {
    stopping ??= (async () => {
      const grace = runtime.policy.shutdownGraceMs;
      log.info("shutting down", { grace_ms: grace });
      let timer: ReturnType<typeof setTimeout> | undefined;
      const expired = new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          log.warn("grace period over; cancelling open requests", {});
          shutdownController.abort();
          resolve();
        }, grace);
      });
      await Promise.race([server.shutdown(), expired]);
      clearTimeout(timer);
      // A connection still open past the grace (a client trickling a body
      // Butler is waiting for) must not hold up saving the usage: wait a
      // moment for the cancelled requests to wind down, then go on.
      let settle: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        server.finished,
        new Promise<void>((resolve) => {
          settle = setTimeout(resolve, AFTER_GRACE_MS);
        }),
      ]);
      clearTimeout(settle);
      runtime.oidc?.stop();
      saver?.stop();
      await saver?.flush({ always: true });
      log.info("stopped", {});
      // The log writes asynchronously: whoever exits after this promise
      // (the signal handler, main) must not lose the last lines.
      await log.flush();
    })();
    return stopping;
  }

  if (options.handleSignals) {
    Deno.addSignalListener("SIGHUP", () => void reload());
    const stop = () => void shutdown().then(() => Deno.exit(0));
    Deno.addSignalListener("SIGTERM", stop);
    Deno.addSignalListener("SIGINT", stop);
  }

  // Finished means stopped for good: the usage is saved too.
  const finished = server.finished.then(() => stopping);
  return { addr, reload, shutdown, finished };
}

/**
 * The fields read at start only whose values differ in `next`: a reload
 * keeps the running ones, and says so.
 */
function startOnlyChanges(running: Policy, next: Policy): string[] {
  const changed: string[] = [];
  if (
    next.listen.hostname !== running.listen.hostname ||
    next.listen.port !== running.listen.port
  ) {
    changed.push("listen");
  }
  if (
    next.tls?.certPath !== running.tls?.certPath ||
    next.tls?.keyPath !== running.tls?.keyPath
  ) {
    changed.push("tls");
  }
  if (next.stateFile !== running.stateFile) changed.push("state_file");
  if (next.budgetTimezone !== running.budgetTimezone) {
    changed.push("budget_timezone");
  }
  return changed;
}

/** Logs each part of the config that will not take effect. */
function logConfigWarnings(policy: Policy, log: Logger): void {
  for (const warning of policy.warnings) {
    log.warn("config warning", { warning });
  }
}

/**
 * Serves `handler` on the config's listen address. An address that cannot
 * be listened on is a {@linkcode StartupError} naming it; a missing network
 * permission stays `NotCapable`.
 */
function serveOn(
  policy: Policy,
  options: StartOptions,
  tls: { cert?: string; key?: string },
  serving: {
    onListen: (addr: Deno.NetAddr) => void;
    handler: Deno.ServeHandler<Deno.NetAddr>;
    log: Logger;
  },
): Deno.HttpServer {
  const hostname = policy.listen.hostname;
  const port = options.port ?? policy.listen.port;
  try {
    return Deno.serve({
      hostname,
      port,
      ...tls,
      onListen: (addr) => serving.onListen(addr as Deno.NetAddr),
      onError: (error) => {
        serving.log.error("internal error", {
          error: describeError(error),
        });
        return new Response("internal error", { status: 500 });
      },
    }, serving.handler);
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
    const where = hostname.includes(":")
      ? `[${hostname}]:${port}`
      : `${hostname}:${port}`;
    if (error instanceof Deno.errors.AddrInUse) {
      throw new StartupError(
        "listen",
        where,
        "the address is already in use (is another Butler running?)",
      );
    }
    if (
      policy.tls !== undefined &&
      !(error instanceof Deno.errors.AddrNotAvailable ||
        error instanceof Deno.errors.PermissionDenied)
    ) {
      throw new StartupError(
        "tls",
        `${policy.tls.certPath}, ${policy.tls.keyPath}`,
        `the certificate and key cannot be used (${describeError(error)})`,
      );
    }
    throw new StartupError(
      "listen",
      where,
      `cannot be listened on (${describeError(error)})`,
    );
  }
}

/** Reads a TLS certificate or key; a file that cannot be read is a `StartupError`. */
async function readTlsFile(field: string, path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
    throw new StartupError(
      field,
      path,
      `cannot be read (${describeError(error)})`,
    );
  }
}

function describeError(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * Writes the state file once (creating it on a first run), so a directory
 * Butler cannot write to stops startup instead of losing usage later, then
 * keeps it current every 5 s.
 */
async function startSavingUsage(
  policy: Policy,
  options: { budgets: TokenBudgets; log: Logger },
): Promise<UsageSaver | undefined> {
  const path = policy.stateFile;
  if (path === undefined) return undefined;
  const { budgets, log } = options;
  try {
    await writeUsage(path, {
      usage: budgets.snapshot(),
      timeZone: budgets.timeZone,
    });
  } catch (error) {
    throw new StateFileError(
      path,
      `cannot be written (${describeError(error)})`,
    );
  }
  log.info("token usage state", {
    state_file: path,
    subjects: Object.keys(budgets.snapshot()).length,
  });
  return startUsageSaver(budgets, {
    path,
    onError: (error) =>
      log.error("token usage not saved; retrying", {
        state_file: path,
        error: describeError(error),
      }),
  });
}

async function logPermissions(policy: Policy, log: Logger) {
  const required = requiredPermissions(policy);
  const held = await heldPermissions(required);
  log.info("permissions", {
    held: Object.fromEntries(
      held.map((p) => [p.name, p.state === "granted" ? "granted" : "no"]),
    ),
  });
  const broader = held.filter((p) => p.broader).map((p) => p.name);
  if (broader.length > 0) {
    log.warn("permissions broader than this config needs", {
      broader,
      hint: "run `main.ts permissions` for the exact flags",
    });
  }
}
