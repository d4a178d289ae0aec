/**
 * The reused read buffer: exact-size copies of what arrived, whatever the
 * split, and a buffer that starts small and grows only while reads fill it.
 */

import assert from "node:assert/strict";
import { CompactReader } from "../src/forward/compact_reads.ts";

/** A byte stream that hands out `pieces` one per pull, as a socket would. */
function socketLike(pieces: Uint8Array[]): ReadableStream<Uint8Array> {
  let next = 0;
  return new ReadableStream({
    type: "bytes",
    pull(controller) {
      if (next === pieces.length) {
        controller.close();
        controller.byobRequest?.respond(0);
        return;
      }
      const piece = pieces[next];
      const request = controller.byobRequest!;
      const view = request.view as Uint8Array;
      const n = Math.min(view.byteLength, piece.byteLength);
      view.set(piece.subarray(0, n));
      request.respond(n);
      if (n === piece.byteLength) next++;
      else pieces[next] = piece.subarray(n);
    },
  });
}

async function readAll(reader: CompactReader): Promise<Uint8Array[]> {
  const chunks: Uint8Array[] = [];
  for (let chunk = await reader.read(); chunk; chunk = await reader.read()) {
    chunks.push(chunk);
  }
  return chunks;
}

function filled(size: number, byte: number): Uint8Array {
  return new Uint8Array(size).fill(byte);
}

Deno.test("small chunks: one exact-size copy each, the buffer stays small", async () => {
  const pieces = [filled(120, 1), filled(80, 2), filled(300, 3)];
  const reader = new CompactReader(socketLike([...pieces]));
  assert.equal(reader.bufferBytes, 4096);
  const chunks = await readAll(reader);
  assert.deepEqual(chunks, pieces);
  // Each copy owns exactly its bytes, not a view of a larger buffer.
  for (const chunk of chunks) {
    assert.equal(chunk.buffer.byteLength, chunk.byteLength);
  }
  assert.equal(reader.bufferBytes, 4096);
});

Deno.test("a large body: the buffer doubles while reads fill it, up to the maximum", async () => {
  const body = new Uint8Array(300_000).map((_, i) => i % 251);
  const reader = new CompactReader(socketLike([body]), {
    maxBufferBytes: 32 * 1024,
  });
  const sizes: number[] = [];
  const chunks: Uint8Array[] = [];
  for (;;) {
    sizes.push(reader.bufferBytes);
    const chunk = await reader.read();
    if (chunk === undefined) break;
    chunks.push(chunk);
  }
  // 4, 8, 16 KiB, then the maximum for the rest.
  assert.deepEqual(sizes.slice(0, 5), [4096, 8192, 16384, 32768, 32768]);
  assert.ok(Math.max(...sizes) === 32 * 1024);
  const joined = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
  let offset = 0;
  for (const chunk of chunks) {
    joined.set(chunk, offset);
    offset += chunk.byteLength;
  }
  assert.deepEqual(joined, body);
});

Deno.test("a fetch body over a real socket arrives whole through a small buffer", async () => {
  const body = new Uint8Array(200_000).map((_, i) => (i * 7) % 256);
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => new Response(body),
  );
  try {
    const response = await fetch(`http://127.0.0.1:${server.addr.port}/`);
    const reader = new CompactReader(response.body!, { bufferBytes: 1024 });
    const chunks = await readAll(reader);
    const total = chunks.reduce((n, c) => n + c.byteLength, 0);
    assert.equal(total, body.byteLength);
    const joined = new Uint8Array(total);
    let offset = 0;
    for (const chunk of chunks) {
      joined.set(chunk, offset);
      offset += chunk.byteLength;
    }
    assert.deepEqual(joined, body);
    assert.ok(reader.bufferBytes > 1024, "the buffer never grew");
  } finally {
    await server.shutdown();
  }
});

Deno.test("a body that is not a byte stream is read as its own chunks", async () => {
  const pieces = [filled(10, 1), filled(5000, 2)];
  const reader = new CompactReader(ReadableStream.from(pieces));
  assert.equal(reader.bufferBytes, 0);
  assert.deepEqual(await readAll(reader), pieces);
});
