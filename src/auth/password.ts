/**
 * Password hashes of users listed in the config: bcrypt (`$2a$`, `$2b$`,
 * `$2y$`, as `htpasswd -B` makes them), checked with bcryptjs on a worker
 * thread (see `password_worker.ts`), in a time that does not tell whether
 * the user exists or how costly the user's hash is.
 *
 * @module
 */

import bcrypt from "bcryptjs";
import { createPasswordCompare } from "./password_worker.ts";

/** The bcrypt cost `hashPassword` uses unless told otherwise. */
export const DEFAULT_BCRYPT_COST = 12;

/**
 * Compares a password with a bcrypt hash; by default on a worker thread
 * ({@linkcode createPasswordCompare}).
 */
export type PasswordCompare = (
  password: string,
  hash: string,
) => Promise<boolean>;

const BCRYPT_HASH = /^\$2[aby]\$(\d{2})\$[./A-Za-z0-9]{53}$/;

/**
 * Salt and digest of a hash of a random password that was thrown away. Only
 * the time a compare takes matters: it depends on the cost alone.
 */
const DUMMY_SALT_AND_DIGEST =
  "KldNGSGMLS2Q3QuY.VzqFefUS.N/kF6/ahdF4qcfgsNDHUSQchlJi";

/**
 * The cost of a bcrypt hash (`$2b$12$…` → 12), or `undefined` when `hash` is
 * not a bcrypt hash.
 */
export function bcryptCost(hash: string): number | undefined {
  const match = BCRYPT_HASH.exec(hash);
  return match === null ? undefined : Number(match[1]);
}

/**
 * A bcrypt hash of the given cost that no password is known to match.
 * Comparing against it takes as long as comparing against a real hash of
 * that cost.
 *
 * @throws {RangeError} when `cost` is not an integer from 4 to 31.
 */
export function dummyPasswordHash(cost: number): string {
  assertBcryptCost(cost);
  return `$2b$${String(cost).padStart(2, "0")}$${DUMMY_SALT_AND_DIGEST}`;
}

/**
 * True when `password` matches the bcrypt `hash`. For unknown users (`hash`
 * undefined) and hashes that are not bcrypt, compares against a dummy hash of
 * `dummyCost` (default 12; pass the highest cost among the configured users'
 * hashes), then answers false. When `hash` is cheaper than `dummyCost`, a
 * dummy compare at `dummyCost` runs alongside it and both are awaited, so
 * every answer takes as long as the costliest hash: the time tells neither
 * whether the user exists nor which user it is. `compare` replaces the
 * default compare, so tests can observe the compares that run.
 *
 * @example
 * ```ts
 * const user = policy.users.find((u) => u.name === username);
 * const ok = await verifyPassword(password, user?.passwordHash);
 * ```
 */
export async function verifyPassword(
  password: string,
  hash: string | undefined,
  options: { compare?: PasswordCompare; dummyCost?: number } = {},
): Promise<boolean> {
  const compare = options.compare ?? defaultCompare();
  const dummyCost = options.dummyCost ?? DEFAULT_BCRYPT_COST;
  const cost = hash === undefined ? undefined : bcryptCost(hash);

  if (hash === undefined || cost === undefined) {
    await compare(password, dummyPasswordHash(dummyCost));
    return false;
  }
  if (cost >= dummyCost) return await compare(password, hash);
  const [matches] = await Promise.all([
    compare(password, hash),
    compare(password, dummyPasswordHash(dummyCost)),
  ]);
  return matches;
}

/**
 * A bcrypt hash (`$2b$`) of `password` with `cost` rounds (default 12), for
 * `password_hash` in `butler.yaml`.
 *
 * @throws {RangeError} when `cost` is not an integer from 4 to 31.
 *
 * @example
 * ```ts
 * const hash = await hashPassword("correct horse battery staple");
 * ```
 */
export async function hashPassword(
  password: string,
  cost: number = DEFAULT_BCRYPT_COST,
): Promise<string> {
  assertBcryptCost(cost);
  return await bcrypt.hash(password, cost);
}

let sharedCompare: PasswordCompare | undefined;

function defaultCompare(): PasswordCompare {
  sharedCompare ??= createPasswordCompare();
  return sharedCompare;
}

function assertBcryptCost(cost: number): void {
  if (!Number.isInteger(cost) || cost < 4 || cost > 31) {
    throw new RangeError(
      `bcrypt cost: ${cost} is out of range; use an integer from 4 to 31`,
    );
  }
}
