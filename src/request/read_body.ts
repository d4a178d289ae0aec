/**
 * Reads a request body whole, never holding more than the configured limit,
 * and undoes the one content encoding Ollama undoes (`zstd` on `POST /v1/*`)
 * so Butler decides on the bytes Ollama will read.
 *
 * @module
 */

import { decodeZstdBounded, ZstdFormatError, ZstdLimitError } from "./zstd.ts";

/** Why a body could not be read; `status` and `reason` become the refusal. */
export class BodyError extends Error {
  /** 400 malformed, 408 read timed out, 413 too large, 415 encoding refused. */
  readonly status: 400 | 408 | 413 | 415;
  /** Stable snake_case code, e.g. `body_too_large`, `unsupported_encoding`. */
  readonly reason: string;

  /** Builds the error. */
  constructor(status: 400 | 408 | 413 | 415, reason: string, message: string) {
    super(message);
    this.name = "BodyError";
    this.status = status;
    this.reason = reason;
  }
}

/** What {@linkcode readBodyBounded} needs to know. */
export interface ReadBodyOptions {
  /** Most bytes accepted, both as received and after decoding. */
  limit: number;
  /** The route decodes `Content-Encoding: zstd` (Ollama's `POST /v1/*`). */
  acceptsZstd: boolean;
  /** Aborting it stops the read with a 408 (e.g. a read deadline). */
  signal?: AbortSignal;
}

/**
 * Reads `request`'s body, refusing before reading when `Content-Length` is
 * over `limit` and while reading when the stream passes it (the stream is
 * cancelled). `Content-Encoding` absent or `identity`: the bytes as they are;
 * `zstd`, exactly, on a route that accepts it: decoded, bounded by `limit`;
 * anything else (gzip, br, deflate, several codings): 415.
 *
 * Returns `raw`, the bytes as received (to forward byte for byte), and
 * `decoded`, the bytes Ollama will parse (to decide on).
 *
 * @example
 * ```ts
 * const { raw, decoded } = await readBodyBounded(request, {
 *   limit: 32 << 20,
 *   acceptsZstd: route.acceptsZstd,
 * });
 * ```
 */
export async function readBodyBounded(
  request: Request,
  options: ReadBodyOptions,
): Promise<{ raw: Uint8Array; decoded: Uint8Array }> {
  const { limit, acceptsZstd, signal } = options;
  if (!Number.isSafeInteger(limit) || limit < 0) {
    throw new RangeError(
      `limit: ${limit} is not allowed; use a whole number of bytes`,
    );
  }

  // 1. Decide on the headers before reading a byte.
  let declared: number | undefined;
  let encoding: "identity" | "zstd";
  try {
    declared = declaredLength(request.headers);
    encoding = chooseEncoding(request.headers, acceptsZstd);
    if (declared !== undefined && declared > limit) {
      throw tooLarge(limit, `Content-Length ${declared}`);
    }
  } catch (error) {
    await request.body?.cancel().catch(() => {});
    throw error;
  }

  // 2. Read, counting.
  const raw = await readAtMost(request.body, limit, signal);
  if (declared !== undefined && raw.length !== declared) {
    throw new BodyError(
      400,
      "bad_content_length",
      `Content-Length: declared ${declared} bytes, the body has ${raw.length}`,
    );
  }

  // 3. Decode what Ollama decodes.
  if (encoding === "identity") return { raw, decoded: raw };
  try {
    return { raw, decoded: decodeZstdBounded(raw, { limit }) };
  } catch (error) {
    if (error instanceof ZstdLimitError) {
      throw tooLarge(limit, "the zstd-decoded body");
    }
    if (error instanceof ZstdFormatError) {
      throw new BodyError(400, "bad_encoding", error.message);
    }
    throw error;
  }
}

function declaredLength(headers: Headers): number | undefined {
  const value = headers.get("content-length");
  if (value === null) return undefined;
  // Several Content-Length headers arrive joined with ", ": refused here too.
  if (!/^[0-9]+$/.test(value)) {
    throw new BodyError(
      400,
      "bad_content_length",
      `Content-Length: ${
        JSON.stringify(value.slice(0, 40))
      } is not a decimal number of bytes`,
    );
  }
  return Number(value);
}

function chooseEncoding(
  headers: Headers,
  acceptsZstd: boolean,
): "identity" | "zstd" {
  const value = headers.get("content-encoding");
  const coding = value?.trim() ?? "";
  if (coding === "" || coding.toLowerCase() === "identity") return "identity";
  // Exactly "zstd": a case variant is refused rather than guessed at, since
  // Ollama and Butler must agree on whether the body is decoded.
  if (coding === "zstd" && acceptsZstd) return "zstd";

  const shown = JSON.stringify(coding.slice(0, 40));
  const rule = acceptsZstd
    ? "this route accepts only identity or zstd"
    : "this route accepts only identity (uncompressed) bodies";
  throw new BodyError(
    415,
    "unsupported_encoding",
    `Content-Encoding: ${shown} is not accepted; ${rule}`,
  );
}

async function readAtMost(
  body: ReadableStream<Uint8Array> | null,
  limit: number,
  signal: AbortSignal | undefined,
): Promise<Uint8Array> {
  if (body === null) return new Uint8Array(0);
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;

  const onAbort = () => reader.cancel().catch(() => {});
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    for (;;) {
      if (signal?.aborted) throw timedOut();
      let result: ReadableStreamReadResult<Uint8Array>;
      try {
        result = await reader.read();
      } catch (error) {
        if (signal?.aborted) throw timedOut();
        throw new BodyError(
          400,
          "body_read_failed",
          `request body: reading failed (${(error as Error).message})`,
        );
      }
      if (signal?.aborted) throw timedOut();
      if (result.done) break;
      total += result.value.length;
      if (total > limit) {
        await reader.cancel().catch(() => {});
        throw tooLarge(limit, "the body");
      }
      chunks.push(result.value);
    }
  } finally {
    signal?.removeEventListener("abort", onAbort);
    reader.releaseLock();
  }

  if (chunks.length === 1) return chunks[0];
  const bytes = new Uint8Array(total);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.length;
  }
  return bytes;
}

function tooLarge(limit: number, what: string): BodyError {
  return new BodyError(
    413,
    "body_too_large",
    `request body: ${what} is over the limit of ${limit} bytes`,
  );
}

function timedOut(): BodyError {
  return new BodyError(
    408,
    "body_timeout",
    "request body: not received in time",
  );
}
