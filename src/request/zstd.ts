/**
 * Bounded, strict decoding of a `Content-Encoding: zstd` request body.
 *
 * `zstdDecompressSync` from `node:zlib` (as Deno 2.9 provides it) is lenient
 * where Go's decoder is not: it returns only the first of several
 * concatenated frames, ignores bytes after the first frame, and returns an
 * empty result for a truncated frame. Ollama decodes every frame of the
 * body, so Butler must see the same bytes. This module walks the frame
 * structure itself (RFC 8878 §3.1), refuses anything that is not a sequence
 * of complete frames, and decompresses each data frame on its own.
 *
 * @module
 */

import { zstdDecompressSync } from "node:zlib";

/** The body is not a well-formed sequence of zstd frames. */
export class ZstdFormatError extends Error {
  /** Builds the error; `what` says what was wrong and where. */
  constructor(what: string) {
    super(`zstd body: ${what}`);
    this.name = "ZstdFormatError";
  }
}

/** The decoded body would exceed the limit. */
export class ZstdLimitError extends Error {
  /** Builds the error for `limit` bytes. */
  constructor(limit: number) {
    super(`zstd body: decodes to more than ${limit} bytes`);
    this.name = "ZstdLimitError";
  }
}

const FRAME_MAGIC = 0xfd2fb528;
const SKIPPABLE_MASK = 0xfffffff0;
const SKIPPABLE_MAGIC = 0x184d2a50;

/**
 * Decodes every frame of `bytes` (skippable frames skipped), refusing
 * truncated or trailing data and frames that need a dictionary, and stopping
 * as soon as the output would pass `limit` bytes.
 *
 * @example
 * ```ts
 * const body = decodeZstdBounded(raw, { limit: 32 << 20 });
 * ```
 */
export function decodeZstdBounded(
  bytes: Uint8Array,
  options: { limit: number },
): Uint8Array {
  const { limit } = options;
  const outputs: Uint8Array[] = [];
  let total = 0;
  let pos = 0;

  while (pos < bytes.length) {
    const end = frameEnd(bytes, pos);
    if (readU32(bytes, pos) === FRAME_MAGIC) {
      const decoded = decodeFrame(bytes.subarray(pos, end), limit - total);
      total += decoded.length;
      outputs.push(decoded);
    }
    pos = end;
  }

  if (outputs.length === 1) return outputs[0];
  const result = new Uint8Array(total);
  let at = 0;
  for (const output of outputs) {
    result.set(output, at);
    at += output.length;
  }
  return result;
}

function decodeFrame(frame: Uint8Array, remaining: number): Uint8Array {
  let decoded: Uint8Array;
  try {
    // maxOutputLength must be positive; the length is checked again below.
    decoded = zstdDecompressSync(frame, {
      maxOutputLength: Math.max(remaining, 1),
    });
  } catch (error) {
    if ((error as { code?: string }).code === "ERR_BUFFER_TOO_LARGE") {
      throw new ZstdLimitError(remaining);
    }
    throw new ZstdFormatError(
      `a frame does not decode (${(error as Error).message})`,
    );
  }
  if (decoded.length > remaining) throw new ZstdLimitError(remaining);
  return new Uint8Array(decoded.buffer, decoded.byteOffset, decoded.length);
}

/** The offset just after the frame starting at `start`. */
function frameEnd(bytes: Uint8Array, start: number): number {
  const magic = readU32(bytes, start);
  if (magic === undefined) {
    throw new ZstdFormatError(`truncated frame magic at byte ${start}`);
  }

  if ((magic & SKIPPABLE_MASK) >>> 0 === SKIPPABLE_MAGIC) {
    const size = readU32(bytes, start + 4);
    if (size === undefined || start + 8 + size > bytes.length) {
      throw new ZstdFormatError(`truncated skippable frame at byte ${start}`);
    }
    return start + 8 + size;
  }
  if (magic !== FRAME_MAGIC) {
    throw new ZstdFormatError(`no zstd frame magic at byte ${start}`);
  }

  // Frame header: descriptor, window, dictionary id, content size.
  let pos = start + 4;
  const descriptor = bytes[pos++];
  if (descriptor === undefined) {
    throw new ZstdFormatError(`truncated frame header at byte ${start}`);
  }
  const sizeFlag = descriptor >> 6;
  const singleSegment = (descriptor & 0x20) !== 0;
  const hasChecksum = (descriptor & 0x04) !== 0;
  const dictionaryFlag = descriptor & 0x03;
  if ((descriptor & 0x08) !== 0) {
    throw new ZstdFormatError(`reserved header bit set at byte ${start + 4}`);
  }
  if (!singleSegment) pos += 1;
  const dictionaryBytes = [0, 1, 2, 4][dictionaryFlag];
  let dictionaryId = 0;
  for (let i = 0; i < dictionaryBytes; i++) {
    dictionaryId += (bytes[pos + i] ?? 0) * 2 ** (8 * i);
  }
  if (dictionaryId !== 0) {
    throw new ZstdFormatError(
      `frame at byte ${start} needs dictionary ${dictionaryId}; ` +
        "dictionaries are not supported",
    );
  }
  pos += dictionaryBytes;
  pos += [singleSegment ? 1 : 0, 2, 4, 8][sizeFlag];
  if (pos > bytes.length) {
    throw new ZstdFormatError(`truncated frame header at byte ${start}`);
  }

  // Blocks, until the one flagged last.
  for (;;) {
    if (pos + 3 > bytes.length) {
      throw new ZstdFormatError(`truncated block header at byte ${pos}`);
    }
    const header = bytes[pos] | (bytes[pos + 1] << 8) | (bytes[pos + 2] << 16);
    const last = (header & 1) !== 0;
    const type = (header >> 1) & 3;
    const size = header >>> 3;
    if (type === 3) {
      throw new ZstdFormatError(`reserved block type at byte ${pos}`);
    }
    pos += 3 + (type === 1 ? 1 : size);
    if (pos > bytes.length) {
      throw new ZstdFormatError(`truncated block ending at byte ${pos}`);
    }
    if (last) break;
  }

  if (hasChecksum) pos += 4;
  if (pos > bytes.length) {
    throw new ZstdFormatError(`truncated content checksum at byte ${pos}`);
  }
  return pos;
}

function readU32(bytes: Uint8Array, at: number): number | undefined {
  if (at + 4 > bytes.length) return undefined;
  return (bytes[at] | (bytes[at + 1] << 8) | (bytes[at + 2] << 16) |
    (bytes[at + 3] << 24)) >>> 0;
}
