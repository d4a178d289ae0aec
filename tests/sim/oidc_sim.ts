/**
 * A local OIDC provider for tests, on 127.0.0.1: discovery at
 * `<issuer>/.well-known/openid-configuration`, keys at `<issuer>/certs`,
 * real tokens signed with `jose`, key rotation, and an outage switch.
 *
 * The issuer is `http://127.0.0.1:PORT/realms/test`. Discovery is answered
 * for any realm path with that same issuer, the way a provider behind a
 * misconfigured proxy would: a verifier configured with another realm sees a
 * discovery document naming another issuer.
 *
 * @module
 */

import {
  type CryptoKey as JoseKey,
  exportJWK,
  generateKeyPair,
  importJWK,
  type JWK,
  SignJWT,
} from "jose";

/** A running simulator. */
export interface OidcSim {
  issuer: string;
  jwksUri: string;
  /** The audience tokens get unless `sign` is told otherwise. */
  audience: string;
  /**
   * A new current key; the previous one stays published as the old key, as
   * providers do while tokens signed with it are still alive.
   */
  rotate(): Promise<void>;
  /** While down, every request is answered 503. */
  setDown(down: boolean): void;
  /**
   * Signs a token. Defaults: the simulator's algorithm and current key, `exp`
   * 5 minutes ahead, this issuer and audience, `iat` now. Numbers for
   * `expiresIn`/`notBefore` are epoch seconds; strings are spans from now
   * (`"5m"`). `key: "unknown"` signs with a key that is never published; an
   * `alg` other than the simulator's signs with the same RSA key material
   * when possible, else with a fresh unpublished key, under the chosen `kid`.
   */
  sign(
    claims: Record<string, unknown>,
    options?: SignOptions,
  ): Promise<string>;
  /** The current public key as a JWK (with `kid`, `alg`, `use`). */
  publicJwk(): JsonWebKey;
  /** Path of every request received, in order. */
  requests: string[];
  close(): Promise<void>;
}

/** Options of {@link OidcSim.sign}. */
export interface SignOptions {
  alg?: string;
  kid?: string;
  expiresIn?: string | number;
  notBefore?: string | number;
  issuer?: string;
  audience?: string;
  key?: "current" | "old" | "unknown";
  /** Leaves `exp` out. */
  omitExpiry?: boolean;
}

interface SimKey {
  kid: string;
  alg: string;
  privateKey: JoseKey;
  privateJwk: JWK;
  publicJwk: JWK;
}

/**
 * Starts the simulator on 127.0.0.1 (`port` 0, the default, picks a free
 * one). Close it with `close()`.
 *
 * @example
 * ```ts
 * const sim = await startOidcSim();
 * const token = await sim.sign({ sub: "u1", roles: ["dev"] });
 * await sim.close();
 * ```
 */
export async function startOidcSim(
  options: { port?: number; alg?: "RS256" | "ES256"; audience?: string } = {},
): Promise<OidcSim> {
  const alg = options.alg ?? "RS256";
  const audience = options.audience ?? "butler";
  let keyCounter = 0;
  async function newKey(keyAlg: string, kid?: string): Promise<SimKey> {
    const pair = await generateKeyPair(keyAlg, { extractable: true });
    const publicJwk = await exportJWK(pair.publicKey);
    const privateJwk = await exportJWK(pair.privateKey);
    const id = kid ?? `key-${++keyCounter}`;
    return {
      kid: id,
      alg: keyAlg,
      privateKey: pair.privateKey,
      privateJwk,
      publicJwk: { ...publicJwk, kid: id, alg: keyAlg, use: "sig" },
    };
  }

  let current = await newKey(alg);
  let old: SimKey | undefined;
  const unknown = await newKey(alg, "never-published");
  let down = false;
  const requests: string[] = [];

  let issuer = "";
  let jwksUri = "";
  function answer(request: Request): Response {
    const path = new URL(request.url).pathname;
    requests.push(path);
    if (down) return new Response("provider down", { status: 503 });

    if (path.endsWith("/.well-known/openid-configuration")) {
      return Response.json({
        issuer,
        jwks_uri: jwksUri,
        authorization_endpoint: `${issuer}/auth`,
        token_endpoint: `${issuer}/token`,
        response_types_supported: ["code"],
        subject_types_supported: ["public"],
        id_token_signing_alg_values_supported: [alg],
      });
    }
    if (path === new URL(jwksUri).pathname) {
      const keys = [current.publicJwk];
      if (old !== undefined) keys.push(old.publicJwk);
      return Response.json({ keys });
    }
    return new Response("not found", { status: 404 });
  }
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: options.port ?? 0, onListen() {} },
    answer,
  );
  issuer = `http://127.0.0.1:${server.addr.port}/realms/test`;
  jwksUri = `${issuer}/certs`;

  async function signingKey(options: SignOptions): Promise<SimKey> {
    const which = options.key ?? "current";
    const base = which === "current"
      ? current
      : which === "old"
      ? old
      : unknown;
    if (base === undefined) {
      throw new Error('sign: key "old" exists only after rotate()');
    }
    const tokenAlg = options.alg ?? base.alg;
    if (tokenAlg === base.alg) return base;
    if (base.privateJwk.kty === "RSA" && /^(RS|PS)\d{3}$/.test(tokenAlg)) {
      const privateKey = await importJWK(
        { ...base.privateJwk, alg: tokenAlg },
        tokenAlg,
      ) as JoseKey;
      return { ...base, alg: tokenAlg, privateKey };
    }
    return await newKey(tokenAlg, base.kid);
  }

  return {
    issuer,
    jwksUri,
    audience,
    requests,
    async rotate() {
      old = current;
      current = await newKey(alg);
    },
    setDown(value: boolean) {
      down = value;
    },
    async sign(claims, signOptions = {}) {
      const key = await signingKey(signOptions);
      const jwt = new SignJWT(claims)
        .setProtectedHeader({
          alg: key.alg,
          kid: signOptions.kid ?? key.kid,
          typ: "JWT",
        })
        .setIssuer(signOptions.issuer ?? issuer)
        .setAudience(signOptions.audience ?? audience)
        .setIssuedAt();
      if (!signOptions.omitExpiry) {
        jwt.setExpirationTime(signOptions.expiresIn ?? "5m");
      }
      if (signOptions.notBefore !== undefined) {
        jwt.setNotBefore(signOptions.notBefore);
      }
      return await jwt.sign(key.privateKey);
    },
    publicJwk() {
      return { ...current.publicJwk } as JsonWebKey;
    },
    async close() {
      await server.shutdown();
    },
  };
}
