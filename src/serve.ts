/**
 * Puts Butler on a socket: loads the config, serves the handler, reloads on
 * SIGHUP, drains on SIGTERM/SIGINT. Everything that lives for the whole
 * process (counters, limiters, the log) is made here once.
 *
 * @module
 */

import type { Policy } from "./config/policy.ts";
import { loadPolicy } from "./config/load.ts";
import { ConfigError } from "./config/errors.ts";
import {
  createHandler,
  createRuntime,
  type Runtime,
  type Shared,
} from "./server.ts";
import { RateLimiter } from "./policy/rate_limiter.ts";
import { ConcurrencyLimiter } from "./policy/concurrency.ts";
import { LoginThrottle } from "./auth/login_throttle.ts";
import { OidcVerifier } from "./auth/oidc.ts";
import { Logger } from "./observe/log.ts";
import { butlerMetrics, Registry } from "./observe/metrics.ts";
import { heldPermissions, requiredPermissions } from "./permissions.ts";
import { VERSION } from "./version.ts";

/** A running Butler. */
export interface RunningButler {
  /** The address it listens on. */
  readonly addr: Deno.NetAddr;
  /** Re-reads the config; keeps the old one when the new one is invalid. */
  reload(): Promise<boolean>;
  /** Stops accepting, lets requests finish for the grace period, cancels the rest. */
  shutdown(): Promise<void>;
  /** Resolves when the server has stopped. */
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
}

function oidcFor(policy: Policy): OidcVerifier | undefined {
  if (policy.auth.oidc === undefined) return undefined;
  const verifier = new OidcVerifier(policy.auth.oidc);
  verifier.start();
  return verifier;
}

/** Loads the config and starts serving. Throws ConfigError on a bad config. */
export async function startButler(
  options: StartOptions,
): Promise<RunningButler> {
  const log = options.log ?? new Logger();
  const policy = await loadPolicy(options.configPath);

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
  };
  let runtime: Runtime = createRuntime(policy, { oidc: oidcFor(policy) });
  const shutdownController = new AbortController();
  const handler = createHandler(() => runtime, shared, {
    shutdownSignal: shutdownController.signal,
  });

  await logPermissions(policy, log);

  const tls = policy.tls === undefined ? {} : {
    cert: await Deno.readTextFile(policy.tls.certPath),
    key: await Deno.readTextFile(policy.tls.keyPath),
  };
  let listening: (addr: Deno.NetAddr) => void;
  const listened = new Promise<Deno.NetAddr>((resolve) => listening = resolve);
  const server = Deno.serve({
    hostname: policy.listen.hostname,
    port: options.port ?? policy.listen.port,
    ...tls,
    onListen: (addr) => listening(addr as Deno.NetAddr),
    onError: (error) => {
      log.error("internal error", {
        error: error instanceof Error ? error.message : String(error),
      });
      return new Response("internal error", { status: 500 });
    },
  }, handler);
  const addr = await listened;
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
      const previous = runtime;
      runtime = createRuntime(next, { oidc: oidcFor(next) });
      previous.oidc?.stop();
      metrics.configReloads.inc({ result: "success" });
      log.info("config reloaded", { clients: next.clients.length });
      return true;
    } catch (error) {
      metrics.configReloads.inc({ result: "failure" });
      log.error("config reload failed; keeping the previous config", {
        error: error instanceof ConfigError || error instanceof Error
          ? error.message
          : String(error),
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
      await server.finished;
      runtime.oidc?.stop();
      log.info("stopped", {});
    })();
    return stopping;
  }

  if (options.handleSignals) {
    Deno.addSignalListener("SIGHUP", () => void reload());
    const stop = () => void shutdown().then(() => Deno.exit(0));
    Deno.addSignalListener("SIGTERM", stop);
    Deno.addSignalListener("SIGINT", stop);
  }

  return { addr, reload, shutdown, finished: server.finished };
}

async function logPermissions(policy: Policy, log: Logger) {
  const required = requiredPermissions(policy);
  const held = await heldPermissions(required);
  log.info("permissions", {
    held: Object.fromEntries(held.map((p) => [p.name, p.state])),
  });
  const broader = held.filter((p) => p.broader).map((p) => p.name);
  if (broader.length > 0) {
    log.warn("permissions broader than this config needs", {
      broader,
      hint: "run `main.ts permissions` for the exact flags",
    });
  }
}
