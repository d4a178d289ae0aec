/**
 * The exact Deno permissions a config needs, and a check of what the
 * running process actually holds. Butler runs with network access to its
 * listen address, its upstream and its identity provider only, read access
 * to its config (and TLS files), write access to its state directory only.
 *
 * @module
 */

import type { Policy } from "./config/policy.ts";

/** Environment variables the `yaml` package reads while parsing. */
export const LIBRARY_ENV_VARS = ["LOG_STREAM", "LOG_TOKENS"] as const;

/** Runtime flags that are not permissions but change request handling. */
export const RUNTIME_FLAGS = [
  // A permission Butler does not hold must fail, never ask at a terminal.
  "--no-prompt",
  "--unstable-no-legacy-abort",
] as const;

/** What a config needs, as lists. */
export interface PermissionSet {
  readonly net: readonly string[];
  readonly read: readonly string[];
  readonly write: readonly string[];
  readonly env: readonly string[];
}

function hostPort(url: URL): string {
  const port = url.port || (url.protocol === "https:" ? "443" : "80");
  return `${url.hostname}:${port}`;
}

function listenAddress(policy: Policy): string {
  const { hostname, port } = policy.listen;
  return `${hostname.includes(":") ? `[${hostname}]` : hostname}:${port}`;
}

function directoryOf(path: string): string {
  const slash = path.lastIndexOf("/");
  if (slash < 0) return ".";
  return slash === 0 ? "/" : path.slice(0, slash);
}

/** The permissions `policy` needs, nothing more. */
export function requiredPermissions(policy: Policy): PermissionSet {
  const net = new Set([listenAddress(policy), hostPort(policy.upstream)]);
  // The JWKS normally lives on the issuer's host; a provider that publishes
  // keys elsewhere needs that host added by hand (the README says so).
  if (policy.auth.oidc !== undefined) {
    net.add(hostPort(policy.auth.oidc.issuer));
  }

  const read = new Set([policy.configPath]);
  if (policy.tls !== undefined) {
    read.add(policy.tls.certPath);
    read.add(policy.tls.keyPath);
  }
  const write = new Set<string>();
  if (policy.stateFile !== undefined) {
    const dir = directoryOf(policy.stateFile);
    read.add(dir);
    write.add(dir);
  }
  const env = new Set([...policy.envVars, ...LIBRARY_ENV_VARS]);
  return {
    net: [...net],
    read: [...read],
    write: [...write],
    env: [...env].sort(),
  };
}

/**
 * What a reload onto `next` needs from the running process. `listen`, `tls`
 * and `state_file` are read at start only, so those come from `running`,
 * the config the process started with; everything else (the upstream, the
 * OIDC issuer, the `${VAR}`s) from `next`.
 */
export function reloadPermissions(
  next: Policy,
  running: Policy,
): PermissionSet {
  return requiredPermissions({
    ...next,
    listen: running.listen,
    tls: running.tls,
    stateFile: running.stateFile,
  });
}

/**
 * The entries of `required` this process does not hold, each written as
 * its kind and value: `net 127.0.0.1:11434`, `read /etc/butler.yaml`,
 * `write /var/lib/butler`, `env BUTLER_KEY`. Empty when everything is
 * granted. Asks without prompting (`Deno.permissions.querySync`), so a
 * permission that would need a prompt counts as missing.
 */
export function missingPermissions(required: PermissionSet): string[] {
  const missing: string[] = [];
  const check = (label: string, descriptor: Deno.PermissionDescriptor) => {
    if (Deno.permissions.querySync(descriptor).state !== "granted") {
      missing.push(label);
    }
  };
  for (const host of required.net) check(`net ${host}`, { name: "net", host });
  for (const path of required.read) {
    check(`read ${path}`, { name: "read", path });
  }
  for (const path of required.write) {
    check(`write ${path}`, { name: "write", path });
  }
  for (const variable of required.env) {
    check(`env ${variable}`, { name: "env", variable });
  }
  return missing;
}

/** The permission flags for `deno run` / `deno compile`. */
export function permissionFlags(set: PermissionSet): string[] {
  const flags = [
    `--allow-net=${set.net.join(",")}`,
    `--allow-read=${set.read.join(",")}`,
  ];
  if (set.write.length > 0) flags.push(`--allow-write=${set.write.join(",")}`);
  flags.push(`--allow-env=${set.env.join(",")}`);
  return flags;
}

/** One line per permission kind: what this process holds. */
export interface HeldPermission {
  readonly name: string;
  readonly state: string;
  /** True when the process holds more than `required` allows. */
  readonly broader: boolean;
}

/**
 * Queries what the running process holds for each permission kind and
 * whether it is broader than `required`: unrestricted net, read, write or
 * env, or any run, ffi or sys access.
 */
export async function heldPermissions(
  required: PermissionSet,
): Promise<HeldPermission[]> {
  const held: HeldPermission[] = [];
  const check = async (
    name: string,
    descriptor: Deno.PermissionDescriptor,
    broaderIfGranted: boolean,
  ) => {
    const { state } = await Deno.permissions.query(descriptor);
    held.push({
      name,
      state,
      broader: broaderIfGranted && state === "granted",
    });
  };
  await check("net (any host)", { name: "net" }, true);
  await check("read (any path)", { name: "read" }, true);
  await check("write (any path)", { name: "write" }, true);
  await check("env (any variable)", { name: "env" }, true);
  await check("run", { name: "run" }, true);
  await check("ffi", { name: "ffi" }, true);
  await check("sys", { name: "sys" }, true);
  for (const path of required.write) {
    await check(`write ${path}`, { name: "write", path }, false);
  }
  if (required.write.length === 0) {
    // No state file: any write access at all is more than needed.
    const { state } = await Deno.permissions.query({
      name: "write",
      path: ".",
    });
    held.push({ name: "write .", state, broader: state === "granted" });
  }
  return held;
}
