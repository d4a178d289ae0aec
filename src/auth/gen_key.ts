/**
 * New API keys: 32 random bytes, base64url, with a recognisable prefix so
 * that secret scanners and people can tell what they are.
 *
 * @module
 */

import { sha256Hex } from "./api_keys.ts";

/** Prefix of keys made by `gen-key`. */
export const KEY_PREFIX = "bk_";

/** A new random key and the digest to put in `key_sha256`. */
export async function generateKey(): Promise<{ key: string; sha256: string }> {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  const base64 = btoa(String.fromCharCode(...bytes))
    .replaceAll("+", "-")
    .replaceAll("/", "_")
    .replace(/=+$/, "");
  const key = KEY_PREFIX + base64;
  return { key, sha256: await sha256Hex(key) };
}
