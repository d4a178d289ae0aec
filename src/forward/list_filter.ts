/**
 * Model listings (`/api/tags`, `/v1/models`, `/api/ps`) show only the models
 * the caller may use: the upstream answer is filtered, every other field is
 * left as Ollama sent it.
 *
 * @module
 */

import { type ModelRef, resolveModelRef } from "../models/resolve.ts";

/** Largest listing Butler buffers to filter. */
const LISTING_LIMIT = 16 * 1024 * 1024;

/** Where a listing keeps its entries and which field names each model. */
const LISTING_SHAPES: Record<string, { list: string; name: string[] }> = {
  "/api/tags": { list: "models", name: ["model", "name"] },
  "/api/ps": { list: "models", name: ["model", "name"] },
  "/v1/models": { list: "data", name: ["id"] },
};

/**
 * Filters a listing body. Entries whose name cannot be resolved, or that
 * `allowed` refuses, are dropped. Returns undefined when the body is not a
 * listing of the expected shape (the caller then refuses with 502).
 */
export async function filterListing(
  response: Response,
  options: { route: string; allowed: (ref: ModelRef) => boolean },
): Promise<string | undefined> {
  const shape = LISTING_SHAPES[options.route];
  const length = Number(response.headers.get("content-length") ?? "0");
  if (shape === undefined || length > LISTING_LIMIT) return undefined;

  let parsed: unknown;
  try {
    const text = await response.text();
    if (text.length > LISTING_LIMIT) return undefined;
    parsed = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof parsed !== "object" || parsed === null) return undefined;
  const record = parsed as Record<string, unknown>;
  const entries = record[shape.list];
  if (entries === null && options.route !== "/v1/models") {
    return JSON.stringify(record);
  }
  if (!Array.isArray(entries)) return undefined;

  record[shape.list] = entries.filter((entry) =>
    entryAllowed(entry, shape.name, options.allowed)
  );
  return JSON.stringify(record);
}

function entryAllowed(
  entry: unknown,
  nameFields: readonly string[],
  allowed: (ref: ModelRef) => boolean,
): boolean {
  if (typeof entry !== "object" || entry === null) return false;
  const fields = entry as Record<string, unknown>;
  // Every name the entry carries must be allowed: they should agree, and
  // if they do not, hiding the entry is the safe answer.
  let seen = false;
  for (const field of nameFields) {
    const name = fields[field];
    if (name === undefined) continue;
    if (typeof name !== "string") return false;
    try {
      if (!allowed(resolveModelRef(name))) return false;
    } catch {
      return false;
    }
    seen = true;
  }
  return seen;
}
