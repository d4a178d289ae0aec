/**
 * Byte-stream fixtures: cutting a body into chunks at awkward places (inside
 * a UTF-8 character, inside `data:`, between `\r` and `\n`) and joining
 * chunks back.
 *
 * @module
 */

/** `bytes` cut at each of `points`, in order. */
export function cut(bytes: Uint8Array, points: number[]): Uint8Array[] {
  const chunks: Uint8Array[] = [];
  let start = 0;
  for (const point of [...points, bytes.length]) {
    chunks.push(bytes.slice(start, point));
    start = point;
  }
  return chunks;
}

/** Every way of cutting `bytes` in two, plus one byte at a time. */
export function* awkwardSplits(bytes: Uint8Array): Generator<Uint8Array[]> {
  yield [bytes.slice()];
  for (let i = 1; i < bytes.length; i++) yield cut(bytes, [i]);
  yield cut(bytes, Array.from({ length: bytes.length - 1 }, (_, i) => i + 1));
}

/** The chunks joined into one array. */
export function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}
