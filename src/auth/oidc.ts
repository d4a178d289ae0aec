/**
 * OIDC federation: tokens from the identity provider people already use
 * (Keycloak, Authentik, Okta, Entra ID). Discovery and keys are fetched in
 * the background; Butler starts and serves API keys and local users while
 * the provider is unreachable, and refuses OIDC tokens with a clear reason
 * until keys arrive.
 *
 * @module
 */

import {
  createRemoteJWKSet,
  type CryptoKey as JoseKey,
  customFetch,
  errors,
  type FlattenedJWSInput,
  type JWSHeaderParameters,
  type JWTPayload,
  jwtVerify,
} from "jose";
import type { OidcSettings } from "../config/policy.ts";
import {
  reasonForTokenError,
  TOKEN_CLOCK_TOLERANCE_SECONDS,
} from "./jwt_local.ts";

/**
 * `disabled`: not started or stopped. `discovering`: no keys yet, retrying
 * with backoff. `ready`: tokens are verified. `failed`: the provider answers
 * but its discovery document is unusable for this config (e.g. another
 * issuer); retried with backoff too, in case the provider is fixed.
 */
export type OidcState = "disabled" | "discovering" | "ready" | "failed";

/**
 * Asymmetric algorithms Butler accepts from a provider. Never `none`, never
 * HS*: a provider's keys are public, and an HMAC "signed" with public key
 * bytes proves nothing.
 */
export const ASYMMETRIC_ALGORITHMS: readonly string[] = [
  "RS256",
  "RS384",
  "RS512",
  "PS256",
  "PS384",
  "PS512",
  "ES256",
  "ES384",
  "ES512",
  "EdDSA",
  "Ed25519",
];

/** Options of {@link OidcVerifier}. */
export interface OidcVerifierOptions {
  /** Replaces `fetch` for discovery and keys. */
  fetch?: typeof fetch;
  /** Seconds of skew accepted on `exp` and `nbf`. Default 30. */
  clockToleranceSeconds?: number;
  /** First retry delay after a failed discovery. Default 1 s. */
  initialBackoffMs?: number;
  /** Longest retry delay; the delay doubles up to it. Default 5 min. */
  maxBackoffMs?: number;
  /**
   * Shortest time between two key fetches caused by tokens with an unknown
   * `kid`. Default 30 s.
   */
  keyRefetchCooldownMs?: number;
  /** Time limit of each discovery and key fetch. Default 5 s. */
  fetchTimeoutMs?: number;
}

type KeyResolver = (
  header: JWSHeaderParameters,
  input: FlattenedJWSInput,
) => Promise<JoseKey>;

/** The provider's keys and what its discovery document allows. */
interface ProviderKeys {
  readonly issuer: string;
  readonly algorithms: readonly string[];
  readonly resolveKey: KeyResolver;
}

/** The provider answered, but its configuration does not fit this Butler. */
class ProviderMisconfigured extends Error {}

/** Keys could not be fetched while verifying a token. */
class KeysUnavailable extends Error {}

/**
 * Manages discovery and keys for one issuer. `start` begins discovery in the
 * background, retrying with exponential backoff (1 s doubling to 5 min) and
 * never throwing; once ready, discovery and keys are refreshed every
 * `refreshIntervalMs`, and a refresh that fails keeps the keys already held.
 * The discovery document's `issuer` must equal the configured issuer.
 * Allowed algorithms: those the provider publishes in
 * `id_token_signing_alg_values_supported` that are in
 * {@link ASYMMETRIC_ALGORITHMS}.
 *
 * @example
 * ```ts
 * const oidc = new OidcVerifier(policy.auth.oidc!);
 * oidc.start();
 * const result = await oidc.verify(bearer);
 * if ("reason" in result) refuse(401, result.reason, "…");
 * ```
 */
export class OidcVerifier {
  #settings: OidcSettings;
  #fetch: typeof fetch;
  #clockTolerance: number;
  #initialBackoffMs: number;
  #maxBackoffMs: number;
  #cooldownMs: number;
  #timeoutMs: number;

  #state: OidcState = "disabled";
  #lastError: string | undefined;
  #keys: ProviderKeys | undefined;
  #backoffMs: number;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #stopped: AbortController | undefined;

  constructor(settings: OidcSettings, options: OidcVerifierOptions = {}) {
    this.#settings = settings;
    this.#fetch = options.fetch ?? fetch;
    this.#clockTolerance = options.clockToleranceSeconds ??
      TOKEN_CLOCK_TOLERANCE_SECONDS;
    this.#initialBackoffMs = options.initialBackoffMs ?? 1_000;
    this.#maxBackoffMs = options.maxBackoffMs ?? 300_000;
    this.#cooldownMs = options.keyRefetchCooldownMs ?? 30_000;
    this.#timeoutMs = options.fetchTimeoutMs ?? 5_000;
    this.#backoffMs = this.#initialBackoffMs;
  }

  /** Where discovery and keys stand, for `/healthz`. */
  get state(): OidcState {
    return this.#state;
  }

  /** Why the last discovery or refresh failed (no secrets in it). */
  get lastError(): string | undefined {
    return this.#lastError;
  }

  /** Starts background discovery. Does nothing when already started. */
  start(): void {
    if (this.#stopped !== undefined) return;
    this.#stopped = new AbortController();
    this.#state = "discovering";
    this.#backoffMs = this.#initialBackoffMs;
    void this.#discover();
  }

  /** Stops refreshing and retrying; tokens are refused afterwards. */
  stop(): void {
    this.#stopped?.abort();
    this.#stopped = undefined;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#keys = undefined;
    this.#state = "disabled";
  }

  /**
   * Verifies a token: while not ready → `{ reason: "oidc_unavailable" }`;
   * otherwise signature, issuer, audience (= `client_id`), algorithm,
   * `exp`/`nbf` with clock tolerance. Returns the claims, the username
   * (`username_claim`, default `preferred_username` then `sub`) and the roles
   * (`role_claim_path`: an array of strings or a space-separated string;
   * missing → none).
   */
  async verify(
    token: string,
  ): Promise<
    | { username: string; roles: string[]; claims: Record<string, unknown> }
    | { reason: string }
  > {
    const keys = this.#keys;
    if (this.#state !== "ready" || keys === undefined) {
      return { reason: "oidc_unavailable" };
    }

    let claims: JWTPayload;
    try {
      const verified = await jwtVerify(token, keys.resolveKey, {
        issuer: keys.issuer,
        audience: this.#settings.clientId,
        algorithms: [...keys.algorithms],
        requiredClaims: ["exp"],
        clockTolerance: this.#clockTolerance,
      });
      claims = verified.payload;
    } catch (error) {
      if (error instanceof KeysUnavailable) {
        return { reason: "oidc_keys_unavailable" };
      }
      return { reason: reasonForTokenError(error) };
    }

    const username = this.#username(claims);
    if (username === undefined) return { reason: "token_username_missing" };
    const roles = rolesAt(claims, this.#settings.roleClaimPath);
    if (roles === undefined) return { reason: "token_roles_invalid" };
    return { username, roles, claims };
  }

  #username(claims: JWTPayload): string | undefined {
    const names = this.#settings.usernameClaim === undefined
      ? ["preferred_username", "sub"]
      : [this.#settings.usernameClaim];
    for (const name of names) {
      const value = Object.hasOwn(claims, name) ? claims[name] : undefined;
      if (typeof value === "string" && value !== "") return value;
    }
    return undefined;
  }

  async #discover(): Promise<void> {
    const stopped = this.#stopped;
    if (stopped === undefined) return;

    try {
      const keys = await this.#fetchProviderKeys(stopped.signal);
      if (stopped.signal.aborted) return;
      this.#keys = keys;
      this.#state = "ready";
      this.#lastError = undefined;
      this.#backoffMs = this.#initialBackoffMs;
      this.#schedule(this.#settings.refreshIntervalMs);
    } catch (error) {
      if (stopped.signal.aborted) return;
      this.#lastError = error instanceof Error ? error.message : String(error);
      if (error instanceof ProviderMisconfigured) {
        this.#keys = undefined;
        this.#state = "failed";
      } else if (this.#state !== "ready") {
        // A refresh that fails while ready keeps the keys already held.
        this.#state = "discovering";
      }
      this.#schedule(this.#backoffMs);
      this.#backoffMs = Math.min(this.#backoffMs * 2, this.#maxBackoffMs);
    }
  }

  #schedule(delayMs: number): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.#discover();
    }, delayMs);
  }

  async #fetchProviderKeys(signal: AbortSignal): Promise<ProviderKeys> {
    const configured = this.#settings.issuer;
    const discoveryUrl = new URL(
      configured.href.replace(/\/$/, "") + "/.well-known/openid-configuration",
    );

    // 1. Discovery.
    const response = await this.#fetch(discoveryUrl, {
      redirect: "manual",
      headers: { accept: "application/json" },
      signal: AbortSignal.any([signal, AbortSignal.timeout(this.#timeoutMs)]),
    });
    if (response.status !== 200) {
      await response.body?.cancel();
      throw new Error(
        `OIDC discovery ${discoveryUrl.href} answered ${response.status}`,
      );
    }
    const document: unknown = await response.json();
    if (typeof document !== "object" || document === null) {
      throw new ProviderMisconfigured(
        `OIDC discovery ${discoveryUrl.href}: the body is not a JSON object`,
      );
    }
    const fields = document as Record<string, unknown>;

    // 2. The issuer must be the configured one.
    const issuer = fields.issuer;
    if (typeof issuer !== "string" || !sameIssuer(issuer, configured)) {
      throw new ProviderMisconfigured(
        `OIDC discovery issuer: ${JSON.stringify(issuer)} is not the ` +
          `configured issuer ${JSON.stringify(configured.href)}`,
      );
    }

    // 3. Where the keys are, and which algorithms sign tokens.
    const jwksUri = parseJwksUri(fields.jwks_uri);
    const algorithms = allowedAlgorithms(
      fields.id_token_signing_alg_values_supported,
    );

    // 4. The keys themselves, before declaring ready.
    const remote = createRemoteJWKSet(jwksUri, {
      cooldownDuration: this.#cooldownMs,
      // Refreshed on our own schedule; when the provider is down, the keys
      // already held keep working instead of failing every request.
      cacheMaxAge: Infinity,
      timeoutDuration: this.#timeoutMs,
      [customFetch]: this.#fetch,
    });
    await remote.reload();
    async function resolveKey(
      header: JWSHeaderParameters,
      input: FlattenedJWSInput,
    ): Promise<JoseKey> {
      try {
        return await remote(header, input);
      } catch (error) {
        if (error instanceof errors.JOSEError) throw error;
        throw new KeysUnavailable(String(error));
      }
    }
    return { issuer, algorithms, resolveKey };
  }
}

/**
 * Quick structural check: does this bearer value look like a JWT (three
 * base64url parts, the signature may be empty)? Used to decide between API
 * key and token lookup.
 */
export function looksLikeJwt(value: string): boolean {
  return /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(value);
}

/**
 * The configured issuer is a URL, which adds a `/` to a bare origin: an
 * issuer written `https://id.example.com` is `https://id.example.com/` here.
 * Either spelling of a bare origin matches; anything else must be equal.
 */
function sameIssuer(discovered: string, configured: URL): boolean {
  if (discovered === configured.href) return true;
  return configured.pathname === "/" && discovered + "/" === configured.href;
}

function parseJwksUri(value: unknown): URL {
  let url: URL | undefined;
  try {
    url = typeof value === "string" ? new URL(value) : undefined;
  } catch {
    url = undefined;
  }
  const loopback = url !== undefined &&
    ["127.0.0.1", "[::1]", "localhost"].includes(url.hostname);
  if (
    url === undefined ||
    !(url.protocol === "https:" || (url.protocol === "http:" && loopback))
  ) {
    throw new ProviderMisconfigured(
      `OIDC discovery jwks_uri: ${JSON.stringify(value)} is not an https URL ` +
        `(http is accepted for loopback only)`,
    );
  }
  return url;
}

function allowedAlgorithms(value: unknown): readonly string[] {
  const published = Array.isArray(value) ? value : [];
  const allowed = ASYMMETRIC_ALGORITHMS.filter((alg) =>
    published.includes(alg)
  );
  if (allowed.length === 0) {
    throw new ProviderMisconfigured(
      `OIDC discovery id_token_signing_alg_values_supported: ` +
        `${JSON.stringify(value)} has none of ${
          ASYMMETRIC_ALGORITHMS.join(", ")
        }`,
    );
  }
  return allowed;
}

/**
 * The roles at `path` in the claims: an array (its strings) or a
 * space-separated string. A missing claim gives no roles; a claim of another
 * type gives `undefined`. Only own properties are followed, so a path such as
 * `constructor` or `__proto__` finds nothing.
 */
function rolesAt(
  claims: JWTPayload,
  path: readonly string[],
): string[] | undefined {
  let value: unknown = claims;
  for (const segment of path) {
    if (
      typeof value !== "object" || value === null || Array.isArray(value) ||
      !Object.hasOwn(value, segment)
    ) {
      return [];
    }
    value = (value as Record<string, unknown>)[segment];
  }

  if (typeof value === "string") {
    return value.split(/\s+/).filter((role) => role !== "");
  }
  if (Array.isArray(value)) {
    return value.filter((role): role is string => typeof role === "string");
  }
  return value === undefined || value === null ? [] : undefined;
}
