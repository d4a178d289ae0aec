/**
 * The schema of `butler.yaml`, walked field by field: each field is checked
 * and converted into its place in the `Policy`, and every problem is
 * collected with its field path and line before anything is reported.
 *
 * @module
 */

import {
  parseCorsOrigin,
  parseIssuerUrl,
  parseListenAddress,
  parseUpstreamUrl,
} from "./addresses.ts";
import { parseDuration } from "./duration.ts";
import {
  childPath,
  type ConfigMap,
  type ConfigNode,
  describeValue,
  FieldReader,
  type IssueCollector,
} from "./fields.ts";
import { deepFreeze } from "./freeze.ts";
import {
  type AuthMode,
  type AuthSettings,
  type ClientPolicy,
  modeAccepts,
  type OidcSettings,
  type Policy,
  type SubjectPolicy,
  type TlsSettings,
  type UserPolicy,
} from "./policy.ts";
import { parseRate } from "./rate.ts";
import { readSubjectPolicy, SUBJECT_FIELDS } from "./subject.ts";

const TOP_FIELDS = [
  "listen",
  "upstream",
  "upstream_timeout",
  "global_rate_limit",
  "global_max_concurrent",
  "log_prompts",
  "auth",
  "clients",
  "users",
  "role_policies",
  "user_overrides",
  "enable_account_routes",
  "enable_experimental_routes",
  "metrics",
  "tls",
  "cors",
  "state_file",
  "budget_timezone",
  "shutdown_grace",
];
const AUTH_FIELDS = ["mode", "jwt_secret", "token_expiry", "oidc"];
const OIDC_FIELDS = [
  "issuer",
  "client_id",
  "role_claim_path",
  "username_claim",
  "refresh_interval",
];
const CLIENT_FIELDS = [
  "name",
  "key",
  "key_sha256",
  "require_user_auth",
  ...SUBJECT_FIELDS,
];
const USER_FIELDS = ["name", "password_hash", ...SUBJECT_FIELDS];
const AUTH_MODES: readonly AuthMode[] = [
  "api_key",
  "jwt_standalone",
  "oidc",
  "either",
];

/** Hints for top-level fields that belong somewhere else. */
const MISPLACED: Readonly<Record<string, string>> = {
  ...Object.fromEntries(AUTH_FIELDS.map((name) => [name, 'under "auth"'])),
  ...Object.fromEntries(
    OIDC_FIELDS.map((name) => [name, 'under "auth.oidc"']),
  ),
  ...Object.fromEntries(
    SUBJECT_FIELDS.map((name) => [name, "in each client, user or role policy"]),
  ),
  bearer: 'under "metrics"',
  cert: 'under "tls"',
  allow_origins: 'under "cors"',
};

/**
 * Hints for fields in a client, user or role policy that belong at the top
 * level or under `auth`.
 */
const MISPLACED_IN_SUBJECT: Readonly<Record<string, string>> = {
  ...Object.fromEntries(
    TOP_FIELDS.filter((name) => !SUBJECT_FIELDS.includes(name)).map(
      (name) => [name, "at the top level"],
    ),
  ),
  ...Object.fromEntries(AUTH_FIELDS.map((name) => [name, 'under "auth"'])),
};

const MIN_KEY_LENGTH = 16;
const MIN_JWT_SECRET_BYTES = 32;
const BCRYPT_HASH = /^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$/;

/** Where the config came from and where problems go. */
export interface ValidateOptions {
  /** Becomes `Policy.configPath`. */
  readonly configPath: string;
  /** Names referenced with `${VAR}`, sorted. */
  readonly envVars: readonly string[];
  readonly issues: IssueCollector;
}

/**
 * Walks the parsed config and builds the deeply frozen `Policy`. Problems
 * are added to `options.issues`; the returned policy is only meaningful when
 * none were added. Async because API keys are hashed with `crypto.subtle`.
 */
export async function validatePolicy(
  root: ConfigNode | undefined,
  options: ValidateOptions,
): Promise<Policy | undefined> {
  const { issues } = options;
  if (root === undefined) {
    issues.add("", undefined, "the file is empty; `upstream` is required");
    return undefined;
  }
  if (root.kind !== "map") {
    issues.add(
      "",
      root.line,
      `expected a map of fields at the top level, got ${describeValue(root)}`,
    );
    return undefined;
  }

  // 1. Network: where Butler listens and where Ollama is.
  const top = new FieldReader(root, {
    path: "",
    known: TOP_FIELDS,
    issues,
    elsewhere: MISPLACED,
  });
  const listen = top.parsed("listen", parseListenAddress) ??
    { hostname: "127.0.0.1", port: 8080 };
  const upstream = top.parsed("upstream", parseUpstreamUrl, {
    required: true,
  });
  const upstreamTimeoutMs = readDuration(top, "upstream_timeout", {
    defaultMs: 600_000,
  });
  const globalRate = top.parsed("global_rate_limit", parseRate);
  const globalMaxConcurrent = top.integer("global_max_concurrent");

  // 2. Who may call: auth settings and the subjects.
  const auth = readAuth(top, issues);
  const { clients, keys, userAuthRequired } = readClients(top, issues);
  const users = readUsers(top, issues);
  const rolePolicies = readSubjectMap(top, "role_policies", issues);
  const userOverrides = readSubjectMap(top, "user_overrides", issues);
  checkAuthSources({
    auth,
    clients: clients.length,
    users: users.length,
    roles: rolePolicies.size,
    userAuthRequired,
  }, issues);
  const warnings = [
    ...costlyPasswordHashes(users),
    ...unusedAuthSources({
      mode: auth.settings.mode,
      clients: clients.length,
      users: users.length,
      oidc: auth.oidcWritten,
      roles: rolePolicies.size,
      overrides: userOverrides.size,
    }),
  ];
  await hashClientKeys(keys, issues);

  // 3. Everything else.
  const metrics = top.map("metrics");
  const metricsFields = metrics === undefined ? undefined : new FieldReader(
    metrics,
    { path: "metrics", known: ["bearer"], issues },
  );
  const metricsBearer = metricsFields?.string("bearer", { secret: true });
  if (metricsBearer !== undefined && metricsBearer.length < MIN_KEY_LENGTH) {
    metricsFields?.report(
      "bearer",
      `${redacted(metricsBearer)} is too short; use at least ` +
        `${MIN_KEY_LENGTH} characters`,
    );
  }

  const policy: Policy = {
    configPath: options.configPath,
    envVars: options.envVars,
    listen,
    upstream: upstream ?? new URL("http://127.0.0.1:11434"),
    upstreamTimeoutMs,
    globalRateLimit: globalRate === "unlimited" ? undefined : globalRate,
    globalMaxConcurrent: globalMaxConcurrent === 0
      ? undefined
      : globalMaxConcurrent,
    logPrompts: top.boolean("log_prompts", false),
    auth: auth.settings,
    clients,
    users,
    rolePolicies,
    userOverrides,
    enableAccountRoutes: top.boolean("enable_account_routes", false),
    enableExperimentalRoutes: top.boolean("enable_experimental_routes", false),
    metricsBearer,
    tls: readTls(top, issues),
    corsAllowOrigins: readCors(top, issues),
    stateFile: top.nonEmptyString("state_file"),
    budgetTimezone: top.parsed("budget_timezone", parseTimeZone) ?? "UTC",
    shutdownGraceMs: readDuration(top, "shutdown_grace", {
      defaultMs: 30_000,
      allowZero: true,
    }),
    warnings,
  };
  return deepFreeze(policy);
}

function readDuration(
  fields: FieldReader,
  name: string,
  options: { defaultMs: number; allowZero?: boolean },
): number {
  // A bare number has no unit (Go would read it as nanoseconds); only 0 is
  // the same in every unit.
  const node = fields.node(name);
  if (node?.kind === "scalar" && typeof node.value === "number") {
    if (node.value !== 0) {
      fields.report(
        name,
        `${node.value} has no unit; write e.g. "${node.value}s" or ` +
          `"${node.value}m"`,
      );
      return options.defaultMs;
    }
  }
  const ms = node?.kind === "scalar" && node.value === 0
    ? 0
    : fields.parsed(name, parseDuration);
  if (ms === undefined) return options.defaultMs;
  if (ms === 0 && !options.allowZero) {
    fields.report(name, "must be longer than 0");
    return options.defaultMs;
  }
  return ms;
}

function parseTimeZone(text: string): string {
  try {
    return new Intl.DateTimeFormat("en-US", { timeZone: text })
      .resolvedOptions().timeZone;
  } catch {
    throw new RangeError(
      `${JSON.stringify(text)} is not an IANA time zone name; ` +
        `write e.g. "UTC" or "Europe/Paris"`,
    );
  }
}

function redacted(secret: string): string {
  return `<redacted> (${secret.length} characters)`;
}

interface AuthReading {
  readonly settings: AuthSettings;
  /** Line of `auth.mode`; `undefined` when the default is in force. */
  readonly modeLine?: number;
  /** `auth.oidc` is written, even if its fields had problems. */
  readonly oidcWritten: boolean;
  /** `auth.jwt_secret` is written, even if its value had a problem. */
  readonly jwtSecretWritten: boolean;
}

function readAuth(top: FieldReader, issues: IssueCollector): AuthReading {
  const node = top.map("auth");
  const fields = new FieldReader(
    node ?? { kind: "map", entries: new Map(), line: top.lineOf("auth") },
    { path: "auth", known: AUTH_FIELDS, issues, elsewhere: oidcHints() },
  );

  const modeText = fields.string("mode");
  let mode: AuthMode = "api_key";
  if (modeText !== undefined) {
    if ((AUTH_MODES as readonly string[]).includes(modeText)) {
      mode = modeText as AuthMode;
    } else {
      fields.report(
        "mode",
        `${JSON.stringify(modeText)} is not an auth mode; write one of ` +
          AUTH_MODES.map((name) => `"${name}"`).join(", "),
      );
    }
  }

  const secretText = fields.string("jwt_secret", { secret: true });
  let jwtSecret: Uint8Array | undefined;
  if (secretText !== undefined) {
    jwtSecret = new TextEncoder().encode(secretText);
    if (jwtSecret.length < MIN_JWT_SECRET_BYTES) {
      fields.report(
        "jwt_secret",
        `<redacted> (${jwtSecret.length} bytes) is too short; use at least ` +
          `${MIN_JWT_SECRET_BYTES} bytes, e.g. from \`butler gen-key\``,
      );
    }
  }

  const tokenExpiryMs = readDuration(fields, "token_expiry", {
    defaultMs: 86_400_000,
  });
  const oidcNode = fields.map("oidc");
  const oidc = oidcNode === undefined ? undefined : readOidc(
    new FieldReader(oidcNode, {
      path: "auth.oidc",
      known: OIDC_FIELDS,
      issues,
    }),
  );

  const settings: AuthSettings = { mode, tokenExpiryMs, oidc };
  if (jwtSecret !== undefined) {
    const bytes = jwtSecret;
    // A Uint8Array cannot be frozen; each read gets its own copy.
    Object.defineProperty(settings, "jwtSecret", {
      enumerable: true,
      get: () => bytes.slice(),
    });
  }
  return {
    settings,
    modeLine: modeText === undefined ? undefined : fields.lineOf("mode"),
    jwtSecretWritten: fields.written("jwt_secret"),
    oidcWritten: fields.written("oidc"),
  };
}

function oidcHints(): Record<string, string> {
  return Object.fromEntries(
    OIDC_FIELDS.map((name) => [name, 'under "auth.oidc"']),
  );
}

function readOidc(fields: FieldReader): OidcSettings | undefined {
  const issuer = fields.parsed("issuer", parseIssuerUrl, { required: true });
  const clientId = fields.nonEmptyString("client_id", { required: true });
  const claimPath = fields.nonEmptyString("role_claim_path", {
    required: true,
  });
  const roleClaimPath = claimPath?.split(".");
  if (roleClaimPath?.some((segment) => segment === "")) {
    fields.report(
      "role_claim_path",
      `${JSON.stringify(claimPath)} has an empty segment; write claim names ` +
        `separated by dots, e.g. "realm_access.roles"`,
    );
  }
  const usernameClaim = fields.nonEmptyString("username_claim");
  const refreshIntervalMs = readDuration(fields, "refresh_interval", {
    defaultMs: 3_600_000,
  });

  if (
    issuer === undefined || clientId === undefined ||
    roleClaimPath === undefined
  ) {
    return undefined;
  }
  return {
    issuer,
    clientId,
    roleClaimPath,
    usernameClaim,
    refreshIntervalMs,
  };
}

/** A field's path and line, for a problem found later in the walk. */
interface FieldPlace {
  readonly path: string;
  readonly line: number;
}

/** An API key waiting to be hashed, or a digest as written. */
interface PendingKey {
  readonly client: { keySha256: string };
  readonly path: string;
  readonly line: number;
  readonly plain?: string;
}

function readClients(
  top: FieldReader,
  issues: IssueCollector,
): {
  clients: ClientPolicy[];
  keys: PendingKey[];
  userAuthRequired: FieldPlace[];
} {
  const clients: ClientPolicy[] = [];
  const keys: PendingKey[] = [];
  const userAuthRequired: FieldPlace[] = [];
  const names = new Map<string, string>();

  top.list("clients").forEach((node, index) => {
    const path = childPath("clients", index);
    if (node.kind !== "map") {
      issues.add(
        path,
        node.line,
        `expected a client, got ${describeValue(node)}`,
      );
      return;
    }
    const fields = new FieldReader(node, {
      path,
      known: CLIENT_FIELDS,
      issues,
      elsewhere: MISPLACED_IN_SUBJECT,
    });

    const name = readName(fields, names) ?? "";
    const key = fields.string("key", { secret: true });
    const digest = fields.string("key_sha256", { secret: true });
    const client = {
      name,
      keySha256: "",
      requireUserAuth: fields.boolean("require_user_auth", false),
      ...readSubjectPolicy(fields, issues),
    };
    clients.push(client);
    if (client.requireUserAuth) {
      userAuthRequired.push({
        path: fields.pathOf("require_user_auth"),
        line: fields.lineOf("require_user_auth"),
      });
    }

    if (key !== undefined && digest !== undefined) {
      issues.add(
        path,
        node.line,
        `has both "key" and "key_sha256"; keep exactly one of them`,
      );
    } else if (key === undefined && digest === undefined) {
      if (!fields.written("key") && !fields.written("key_sha256")) {
        issues.add(path, node.line, `needs "key" or "key_sha256"`);
      }
    } else if (key !== undefined) {
      if (key.length < MIN_KEY_LENGTH) {
        fields.report(
          "key",
          `${redacted(key)} is too short; use at least ${MIN_KEY_LENGTH} ` +
            "characters, e.g. from `butler gen-key`",
        );
      } else {
        keys.push({
          client,
          path: fields.pathOf("key"),
          line: fields.lineOf("key"),
          plain: key,
        });
      }
    } else if (digest !== undefined) {
      if (/^[0-9A-Fa-f]{64}$/.test(digest)) {
        client.keySha256 = digest.toLowerCase();
        keys.push({
          client,
          path: fields.pathOf("key_sha256"),
          line: fields.lineOf("key_sha256"),
        });
      } else {
        fields.report(
          "key_sha256",
          `${redacted(digest)} is not a SHA-256 digest; write 64 hex digits`,
        );
      }
    }
  });
  return { clients, keys, userAuthRequired };
}

/** Hashes plain keys and reports two clients that share a key. */
async function hashClientKeys(
  keys: readonly PendingKey[],
  issues: IssueCollector,
): Promise<void> {
  const owners = new Map<string, string>();
  for (const pending of keys) {
    if (pending.plain !== undefined) {
      pending.client.keySha256 = await sha256Hex(pending.plain);
    }
    const digest = pending.client.keySha256;
    const owner = owners.get(digest);
    const clientPath = pending.path.replace(/\.key(_sha256)?$/, "");
    if (owner === undefined) {
      owners.set(digest, clientPath);
    } else {
      issues.add(
        pending.path,
        pending.line,
        `same key as ${owner}; every client needs its own key`,
      );
    }
  }
}

async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-256",
    new TextEncoder().encode(text),
  );
  return Array.from(
    new Uint8Array(digest),
    (byte) => byte.toString(16).padStart(2, "0"),
  ).join("");
}

function readUsers(top: FieldReader, issues: IssueCollector): UserPolicy[] {
  const users: UserPolicy[] = [];
  const names = new Map<string, string>();

  top.list("users").forEach((node, index) => {
    const path = childPath("users", index);
    if (node.kind !== "map") {
      issues.add(
        path,
        node.line,
        `expected a user, got ${describeValue(node)}`,
      );
      return;
    }
    const fields = new FieldReader(node, {
      path,
      known: USER_FIELDS,
      issues,
      elsewhere: MISPLACED_IN_SUBJECT,
    });

    const name = readName(fields, names) ?? "";
    const passwordHash = fields.string("password_hash", {
      required: true,
      secret: true,
    });
    if (passwordHash !== undefined && !BCRYPT_HASH.test(passwordHash)) {
      fields.report(
        "password_hash",
        `${redacted(passwordHash)} is not a bcrypt hash ($2a$, $2b$ or $2y$, ` +
          "cost 04-31); make one with `butler hash-password`",
      );
    }
    users.push({
      name,
      passwordHash: passwordHash ?? "",
      ...readSubjectPolicy(fields, issues),
    });
  });
  return users;
}

/** Reads a required, unique `name`; `seen` maps names to their paths. */
function readName(
  fields: FieldReader,
  seen: Map<string, string>,
): string | undefined {
  const name = fields.nonEmptyString("name", { required: true });
  if (name === undefined) return undefined;
  const first = seen.get(name);
  if (first !== undefined) {
    fields.report(
      "name",
      `${JSON.stringify(name)} is already the name of ${first}`,
    );
  } else {
    seen.set(name, fields.path);
  }
  return name;
}

function readSubjectMap(
  top: FieldReader,
  name: string,
  issues: IssueCollector,
): Map<string, SubjectPolicy> {
  const policies = new Map<string, SubjectPolicy>();
  const node: ConfigMap | undefined = top.map(name);
  if (node === undefined) return policies;

  for (const [key, value] of node.entries) {
    const path = childPath(name, key);
    if (value.kind !== "map") {
      issues.add(
        path,
        value.line,
        `expected a map of policy fields (use {} for none), got ` +
          describeValue(value),
      );
      continue;
    }
    const fields = new FieldReader(value, {
      path,
      known: SUBJECT_FIELDS,
      issues,
      elsewhere: MISPLACED_IN_SUBJECT,
    });
    policies.set(key, readSubjectPolicy(fields, issues));
  }
  return policies;
}

/** Says exactly which piece the chosen auth mode is missing. */
function checkAuthSources(
  config: {
    auth: AuthReading;
    clients: number;
    users: number;
    roles: number;
    userAuthRequired: readonly FieldPlace[];
  },
  issues: IssueCollector,
): void {
  const { auth, clients, users, roles } = config;
  const { mode } = auth.settings;
  const modeName = auth.modeLine === undefined
    ? `auth.mode "${mode}" (the default)`
    : `auth.mode "${mode}"`;
  function needs(path: string, what: string): void {
    issues.add(path, auth.modeLine, `${modeName} needs ${what}`);
  }

  // A clients list already reported as broken (a map, an alias bomb) is not
  // also "missing".
  const clientsReported = issues.truncated ||
    issues.issues.some((issue) =>
      issue.path === "clients" || issue.path.startsWith("clients[")
    );
  if (mode === "api_key" && clients === 0 && !clientsReported) {
    needs("clients", "at least one client");
  }
  if (mode === "jwt_standalone") {
    if (users === 0) needs("users", "at least one user");
    if (!auth.jwtSecretWritten) needs("auth.jwt_secret", "a jwt_secret");
  }
  if (mode === "oidc") {
    if (!auth.oidcWritten) {
      needs(
        "auth.oidc",
        "auth.oidc with issuer, client_id and role_claim_path",
      );
    }
    if (roles === 0) needs("role_policies", "at least one role policy");
  }
  if (mode === "either") {
    if (clients === 0 && users === 0 && !auth.oidcWritten) {
      needs("auth", "at least one of clients, users or auth.oidc");
    }
    if (users > 0 && !auth.jwtSecretWritten) {
      needs("auth.jwt_secret", "a jwt_secret when users are listed");
    }
    if (auth.oidcWritten && roles === 0) {
      needs("role_policies", "at least one role policy when auth.oidc is set");
    }
  }

  // Users sign in only where the mode takes their tokens.
  const accepts = modeAccepts(mode);
  const canSignInUsers =
    (users > 0 && auth.jwtSecretWritten && accepts.localUsers) ||
    (auth.oidcWritten && accepts.oidc);
  if (canSignInUsers) return;
  for (const place of config.userAuthRequired) {
    issues.add(
      place.path,
      place.line,
      mode === "api_key"
        ? `needs a way to sign users in, which auth.mode "api_key" has ` +
          `not: use auth.mode "either" with users and auth.jwt_secret, ` +
          `or with auth.oidc`
        : "needs a way to sign users in: users with auth.jwt_secret, or auth.oidc",
    );
  }
}

/** bcrypt costs above this take seconds of CPU per login. */
const MAX_COMFORTABLE_BCRYPT_COST = 14;

/**
 * Users whose hash is so costly that each login (and, for timing, each
 * failed login for any name) holds a verification slot and a core for
 * seconds: valid, but worth knowing.
 */
function costlyPasswordHashes(
  users: readonly { name: string; passwordHash: string }[],
): string[] {
  const warnings: string[] = [];
  for (const user of users) {
    const cost = Number(BCRYPT_HASH.exec(user.passwordHash)?.[1]);
    if (cost > MAX_COMFORTABLE_BCRYPT_COST) {
      warnings.push(
        `users ${JSON.stringify(user.name)}: bcrypt cost ${cost} makes every ` +
          `login take about ${2 ** (cost - 12) / 4} s of CPU or more (each ` +
          `step up doubles it), and unknown names are checked at the highest ` +
          `cost; ${MAX_COMFORTABLE_BCRYPT_COST} or less keeps logins quick`,
      );
    }
  }
  return warnings;
}

/**
 * Parts of the config the auth mode never uses: valid (a Go Butler config
 * may carry them), but whoever wrote them probably expects them to work.
 */
function unusedAuthSources(config: {
  mode: AuthMode;
  clients: number;
  users: number;
  oidc: boolean;
  roles: number;
  overrides: number;
}): string[] {
  const { mode, clients, users, oidc, roles, overrides } = config;
  const warnings: string[] = [];
  const accepts = modeAccepts(mode);
  const unused = (what: string) =>
    warnings.push(
      `${what} unused: auth.mode "${mode}" does not accept them; ` +
        `use auth.mode "either" to accept every kind of credential`,
    );
  if (clients > 0 && !accepts.keys) unused("clients are");
  if (users > 0 && !accepts.localUsers) unused("users are");
  if (oidc && !accepts.oidc) unused("auth.oidc is");
  // Role policies apply to provider users only; overrides to any person.
  if (roles > 0 && !accepts.oidc) unused("role_policies are");
  if (overrides > 0 && !accepts.localUsers && !accepts.oidc) {
    unused("user_overrides are");
  }
  return warnings;
}

function readTls(
  top: FieldReader,
  issues: IssueCollector,
): TlsSettings | undefined {
  const node = top.map("tls");
  if (node === undefined) return undefined;
  const fields = new FieldReader(node, {
    path: "tls",
    known: ["cert", "key"],
    issues,
  });
  const certPath = fields.nonEmptyString("cert", { required: true });
  const keyPath = fields.nonEmptyString("key", { required: true });
  if (certPath === undefined || keyPath === undefined) return undefined;
  return { certPath, keyPath };
}

function readCors(top: FieldReader, issues: IssueCollector): string[] {
  const node = top.map("cors");
  if (node === undefined) return [];
  const fields = new FieldReader(node, {
    path: "cors",
    known: ["allow_origins"],
    issues,
  });

  const origins: string[] = [];
  const list = fields.node("allow_origins");
  for (const { value, index } of fields.stringList("allow_origins")) {
    try {
      origins.push(parseCorsOrigin(value));
    } catch (error) {
      if (!(error instanceof RangeError)) throw error;
      const item = list?.kind === "list" ? list.items[index] : undefined;
      issues.add(
        childPath(fields.pathOf("allow_origins"), index),
        item?.line ?? fields.lineOf("allow_origins"),
        error.message,
      );
    }
  }
  return [...new Set(origins)];
}
