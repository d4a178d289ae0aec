/**
 * The typed, frozen policy that `butler.yaml` is compiled into. Request
 * handling reads these objects only; it never re-parses config strings.
 *
 * @module
 */

/** A rate: `count` requests per `periodMs` milliseconds. */
export interface Rate {
  readonly count: number;
  readonly periodMs: number;
  /** The text as written in the config, for logs and headers. */
  readonly text: string;
}

/** A compiled deny-prompt pattern (linear-time RE2 via re2js). */
export interface PromptPattern {
  /** Position in the subject's `deny_prompt_patterns` list (logged on refusal). */
  readonly index: number;
  /** The pattern as written. Never logged together with a prompt. */
  readonly source: string;
  /** True when the pattern matches somewhere in `text`. */
  test(text: string): boolean;
}

/** How an over-cap value is treated. */
export type CapMode = "refuse" | "clamp";

/**
 * Everything a subject (client, user, role, merged roles) may do. Absent
 * numeric limits mean "no limit" (the Go Butler's `0`).
 */
export interface SubjectPolicy {
  /** Where this policy came from, e.g. `clients[0]` or `role_policies.admin`. */
  readonly origin: string;
  /** Model patterns as written (`*`, `llama3.2`, `llama3.2:1b`, `x:cloud`). */
  readonly allowModels: readonly string[];
  readonly denyModels: readonly string[];
  /** `undefined`: no limit (also for `unlimited`). */
  readonly rateLimit?: Rate;
  readonly maxRequestBytes?: number;
  readonly maxCtx?: number;
  readonly maxPredict?: number;
  readonly maxConcurrent?: number;
  /** Seconds; caps `keep_alive`. */
  readonly maxKeepAliveSeconds?: number;
  readonly maxTokensPerDay?: number;
  readonly denyPromptPatterns: readonly PromptPattern[];
  readonly capMode: CapMode;
  /** May send `/api/generate` `context` arrays despite prompt patterns. */
  readonly allowContext: boolean;
  /** May use pull, push, create, copy, delete, blobs and unload models. */
  readonly allowManagement: boolean;
}

/** An API-key client. */
export interface ClientPolicy extends SubjectPolicy {
  readonly name: string;
  /** Lowercase hex SHA-256 of the key. The plain key is never kept. */
  readonly keySha256: string;
  /** The client must also present a user token (`X-Butler-User-Token`). */
  readonly requireUserAuth: boolean;
}

/** A user listed in the config (`jwt_standalone`). */
export interface UserPolicy extends SubjectPolicy {
  readonly name: string;
  readonly passwordHash: string;
}

export type AuthMode = "api_key" | "jwt_standalone" | "oidc" | "either";

/** Which credentials an auth mode takes. */
export function modeAccepts(mode: AuthMode): {
  readonly keys: boolean;
  readonly localUsers: boolean;
  readonly oidc: boolean;
} {
  return {
    keys: mode === "api_key" || mode === "either",
    localUsers: mode === "jwt_standalone" || mode === "either",
    oidc: mode === "oidc" || mode === "either",
  };
}

export interface OidcSettings {
  readonly issuer: URL;
  readonly clientId: string;
  readonly roleClaimPath: readonly string[];
  readonly usernameClaim?: string;
  readonly refreshIntervalMs: number;
}

export interface AuthSettings {
  readonly mode: AuthMode;
  /** UTF-8 bytes of the HS256 secret (>= 32 bytes) when JWT login is on. */
  readonly jwtSecret?: Uint8Array;
  readonly tokenExpiryMs: number;
  readonly oidc?: OidcSettings;
}

export interface TlsSettings {
  readonly certPath: string;
  readonly keyPath: string;
}

/** The whole compiled config. Deeply frozen. */
export interface Policy {
  /** Absolute or relative path the config was read from. */
  readonly configPath: string;
  /**
   * Parts of a valid config that will not take effect (clients under an
   * auth mode without API keys, …): `check` prints them, startup logs them.
   */
  readonly warnings: readonly string[];
  /** Environment variable names the config referenced with `${VAR}`. */
  readonly envVars: readonly string[];
  readonly listen: { readonly hostname: string; readonly port: number };
  /** Upstream base URL, no trailing slash in `href` path. */
  readonly upstream: URL;
  readonly upstreamTimeoutMs: number;
  readonly globalRateLimit?: Rate;
  readonly globalMaxConcurrent?: number;
  readonly logPrompts: boolean;
  readonly auth: AuthSettings;
  readonly clients: readonly ClientPolicy[];
  readonly users: readonly UserPolicy[];
  readonly rolePolicies: ReadonlyMap<string, SubjectPolicy>;
  readonly userOverrides: ReadonlyMap<string, SubjectPolicy>;
  /** `/api/me`, `/api/signout`, `/api/user/keys/*` pass (still need auth). */
  readonly enableAccountRoutes: boolean;
  /** `/api/experimental/*` pass (still need auth). */
  readonly enableExperimentalRoutes: boolean;
  readonly metricsBearer?: string;
  readonly tls?: TlsSettings;
  readonly corsAllowOrigins: readonly string[];
  readonly stateFile?: string;
  readonly budgetTimezone: string;
  readonly shutdownGraceMs: number;
}
