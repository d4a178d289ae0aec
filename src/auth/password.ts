/**
 * Password hashes of users listed in the config: bcrypt (`$2a$`, `$2b$`,
 * `$2y$`, as `htpasswd -B` makes them), checked with bcryptjs's asynchronous
 * API, which yields to the event loop between rounds.
 *
 * @module
 */

import bcrypt from "bcryptjs";

/** The bcrypt cost `hashPassword` uses unless told otherwise. */
export const DEFAULT_BCRYPT_COST = 12;

/** Compares a password with a bcrypt hash; bcryptjs's `compare` by default. */
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
 * `dummyCost` (default 12, pass the cost the configured users' hashes have)
 * so the timing matches, then answers false. `compare` replaces bcryptjs's
 * compare, so tests can observe that the dummy compare runs.
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
  const compare = options.compare ?? bcrypt.compare;

  if (hash === undefined || bcryptCost(hash) === undefined) {
    const dummy = dummyPasswordHash(options.dummyCost ?? DEFAULT_BCRYPT_COST);
    await compare(password, dummy);
    return false;
  }
  return await compare(password, hash);
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

function assertBcryptCost(cost: number): void {
  if (!Number.isInteger(cost) || cost < 4 || cost > 31) {
    throw new RangeError(
      `bcrypt cost: ${cost} is out of range; use an integer from 4 to 31`,
    );
  }
}
