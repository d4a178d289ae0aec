/**
 * API keys: which credential a request presents, and which client it names.
 * Keys are kept only as SHA-256 digests; a presented key is hashed and its
 * digest looked up, so lookup time does not depend on how much of a stored
 * key the presented one shares.
 *
 * @module
 */

import { createHash } from "node:crypto";
import type { ClientPolicy } from "../config/policy.ts";

/** Visible ASCII without spaces: what a bearer token or an API key may hold. */
const CREDENTIAL_TEXT = /^[\x21-\x7e]+$/;

/**
 * Lowercase hex SHA-256 of the UTF-8 bytes of `text`.
 *
 * @example
 * ```ts
 * await sha256Hex("abc");
 * // "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
 * ```
 */
export function sha256Hex(text: string): Promise<string> {
  // Synchronous: `crypto.subtle.digest` hops to a worker thread and back,
  // which cost more than the hash itself on every request (bench/).
  return Promise.resolve(createHash("sha256").update(text).digest("hex"));
}

/**
 * Index of clients by key digest. Lookup hashes the presented key with
 * SHA-256 and looks the hex digest up in a Map, so time does not depend on
 * how much of a key matched.
 *
 * @example
 * ```ts
 * const index = new ApiKeyIndex(policy.clients);
 * const client = await index.lookup(presentedKey); // undefined when unknown
 * ```
 */
export class ApiKeyIndex {
  #byDigest = new Map<string, ClientPolicy>();

  /**
   * @throws {RangeError} when two clients have the same key digest: a key
   * must name exactly one client.
   */
  constructor(clients: readonly ClientPolicy[]) {
    for (const client of clients) {
      const digest = client.keySha256.toLowerCase();
      const earlier = this.#byDigest.get(digest);
      if (earlier !== undefined) {
        throw new RangeError(
          `clients "${earlier.name}" and "${client.name}" have the same key: ` +
            `each client needs its own key`,
        );
      }
      this.#byDigest.set(digest, client);
    }
  }

  /** The client whose key is `key`, or `undefined`. */
  async lookup(key: string): Promise<ClientPolicy | undefined> {
    return this.#byDigest.get(await sha256Hex(key));
  }
}

/**
 * Extracts the presented credential: `Authorization: Bearer <x>` (scheme
 * case-insensitive, exactly one space-separated token) or `x-api-key: <x>`.
 * Both present with different values → `{ error: "conflicting_credentials" }`.
 * Malformed Authorization (other scheme, empty) →
 * `{ error: "malformed_authorization" }`; an `x-api-key` that is empty or
 * holds spaces or control characters (several headers are joined with ", ")
 * → `{ error: "malformed_api_key" }`. None → `{ none: true }`.
 *
 * @example
 * ```ts
 * presentedCredential(new Headers({ authorization: "Bearer k1" }));
 * // { value: "k1" }
 * ```
 */
export function presentedCredential(
  headers: Headers,
): { value: string } | { none: true } | { error: string } {
  const authorization = headers.get("authorization");
  const apiKey = headers.get("x-api-key");

  let bearer: string | undefined;
  if (authorization !== null) {
    const parts = authorization.split(" ");
    if (
      parts.length !== 2 || parts[0].toLowerCase() !== "bearer" ||
      !CREDENTIAL_TEXT.test(parts[1])
    ) {
      return { error: "malformed_authorization" };
    }
    bearer = parts[1];
  }

  if (apiKey !== null && !CREDENTIAL_TEXT.test(apiKey)) {
    return { error: "malformed_api_key" };
  }

  if (bearer !== undefined && apiKey !== null && bearer !== apiKey) {
    return { error: "conflicting_credentials" };
  }
  const value = bearer ?? apiKey;
  return value === null ? { none: true } : { value };
}
