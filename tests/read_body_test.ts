import assert from "node:assert/strict";
import { zstdCompressSync } from "node:zlib";
import { BodyError, readBodyBounded } from "../src/request/read_body.ts";

const encode = (text: string) => new TextEncoder().encode(text);
const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
const zstd = (bytes: Uint8Array) => new Uint8Array(zstdCompressSync(bytes));

function post(body: BodyInit | null, headers: Record<string, string> = {}) {
  return new Request("http://127.0.0.1/v1/chat/completions", {
    method: "POST",
    body,
    headers,
  });
}

/** A chunked body: a stream without Content-Length, recording how much was pulled. */
function trackedStream(chunks: Uint8Array[]) {
  const state = { pulled: 0, cancelled: false };
  let index = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (index >= chunks.length) return controller.close();
      state.pulled++;
      controller.enqueue(chunks[index++]);
    },
    cancel() {
      state.cancelled = true;
    },
  });
  return { stream, state };
}

async function assertBodyError(
  promise: Promise<unknown>,
  status: number,
  reason: string,
) {
  await assert.rejects(
    promise,
    (error) =>
      error instanceof BodyError && error.status === status &&
      error.reason === reason,
    `expected BodyError ${status} ${reason}`,
  );
}

Deno.test("readBodyBounded returns identity bodies as they are", async () => {
  const body = encode('{"model":"m"}');
  const { raw, decoded } = await readBodyBounded(post(body), {
    limit: 100,
    acceptsZstd: false,
  });
  assert.deepEqual(raw, body);
  assert.equal(decoded, raw);

  const identity = await readBodyBounded(
    post(body, { "content-encoding": "Identity" }),
    { limit: body.length, acceptsZstd: false },
  );
  assert.deepEqual(identity.decoded, body);

  const empty = await readBodyBounded(
    new Request("http://127.0.0.1/api/tags"),
    { limit: 0, acceptsZstd: false },
  );
  assert.equal(empty.raw.length, 0);
});

Deno.test("readBodyBounded refuses a Content-Length over the limit before reading", async () => {
  const { stream, state } = trackedStream([encode("x".repeat(10))]);
  const request = post(stream, { "content-length": "11" });
  await assertBodyError(
    readBodyBounded(request, { limit: 10, acceptsZstd: false }),
    413,
    "body_too_large",
  );
  assert.equal(state.pulled, 0);
  assert.equal(state.cancelled, true);
});

Deno.test("readBodyBounded bounds a chunked body while reading and cancels it", async () => {
  const chunk = encode("y".repeat(1000));
  const { stream, state } = trackedStream(Array(100).fill(chunk));
  await assertBodyError(
    readBodyBounded(post(stream), { limit: 2500, acceptsZstd: false }),
    413,
    "body_too_large",
  );
  assert.equal(state.pulled <= 4, true, `pulled ${state.pulled} chunks`);
  assert.equal(state.cancelled, true);

  const exact = trackedStream([chunk, chunk]);
  const { raw } = await readBodyBounded(post(exact.stream), {
    limit: 2000,
    acceptsZstd: false,
  });
  assert.equal(raw.length, 2000);
});

Deno.test("readBodyBounded refuses a Content-Length that is not a decimal", async () => {
  for (const value of ["1e2", "-1", "+5", "5, 5", "0x10", ""]) {
    const request = post(encode("hello"), { "content-length": value });
    await assertBodyError(
      readBodyBounded(request, { limit: 100, acceptsZstd: false }),
      400,
      "bad_content_length",
    );
  }
});

Deno.test("readBodyBounded refuses a body whose length differs from Content-Length", async () => {
  const { stream } = trackedStream([encode("hello")]);
  await assertBodyError(
    readBodyBounded(post(stream, { "content-length": "4" }), {
      limit: 100,
      acceptsZstd: false,
    }),
    400,
    "bad_content_length",
  );
});

Deno.test("readBodyBounded refuses encodings Ollama does not decode (415)", async () => {
  for (
    const [coding, acceptsZstd] of [
      ["gzip", true],
      ["br", true],
      ["deflate", true],
      ["zstd, gzip", true],
      ["ZSTD", true],
      ["zstd", false],
    ] as const
  ) {
    await assertBodyError(
      readBodyBounded(post(encode("{}"), { "content-encoding": coding }), {
        limit: 100,
        acceptsZstd,
      }),
      415,
      "unsupported_encoding",
    );
  }
});

Deno.test("readBodyBounded decodes zstd where accepted, keeping the raw bytes", async () => {
  const json = encode(JSON.stringify({ model: "m", prompt: "p".repeat(5000) }));
  const compressed = zstd(json);
  const { raw, decoded } = await readBodyBounded(
    post(compressed, { "content-encoding": "zstd" }),
    { limit: json.length, acceptsZstd: true },
  );
  assert.deepEqual(raw, compressed);
  assert.deepEqual(decoded, json);
});

Deno.test("readBodyBounded decodes every zstd frame, as Go does", async () => {
  const first = zstd(encode('{"model":"allowed",'));
  const second = zstd(encode('"model":"denied"}'));
  const skippable = new Uint8Array([0x50, 0x2a, 0x4d, 0x18, 2, 0, 0, 0, 9, 9]);
  const body = new Uint8Array([...first, ...skippable, ...second]);
  const { decoded } = await readBodyBounded(
    post(body, { "content-encoding": "zstd" }),
    { limit: 1000, acceptsZstd: true },
  );
  assert.equal(decode(decoded), '{"model":"allowed","model":"denied"}');
});

Deno.test("readBodyBounded refuses a zstd bomb over the limit (413)", async () => {
  const bomb = zstd(new Uint8Array(50_000_000));
  assert.equal(bomb.length < 10_000, true);
  await assertBodyError(
    readBodyBounded(post(bomb, { "content-encoding": "zstd" }), {
      limit: 1_000_000,
      acceptsZstd: true,
    }),
    413,
    "body_too_large",
  );
  // Over the limit only across frames.
  const half = zstd(new Uint8Array(600));
  await assertBodyError(
    readBodyBounded(
      post(new Uint8Array([...half, ...half]), { "content-encoding": "zstd" }),
      { limit: 1000, acceptsZstd: true },
    ),
    413,
    "body_too_large",
  );
});

Deno.test("readBodyBounded refuses malformed zstd (400)", async () => {
  const good = zstd(encode('{"model":"m"}'));
  const bodies = [
    encode('{"model":"m"}'), // not zstd at all
    good.subarray(0, good.length - 2), // truncated
    new Uint8Array([...good, 1, 2, 3]), // trailing garbage
    new Uint8Array([...good, 0x28, 0xb5]), // truncated second frame
  ];
  for (const body of bodies) {
    await assertBodyError(
      readBodyBounded(post(body, { "content-encoding": "zstd" }), {
        limit: 1000,
        acceptsZstd: true,
      }),
      400,
      "bad_encoding",
    );
  }
});

Deno.test("readBodyBounded stops with 408 when its signal aborts", async () => {
  const controller = new AbortController();
  const stream = new ReadableStream<Uint8Array>({
    start(streamController) {
      streamController.enqueue(encode("{"));
      // Never closes: a client that stalls.
    },
  });
  const reading = readBodyBounded(post(stream), {
    limit: 100,
    acceptsZstd: false,
    signal: controller.signal,
  });
  controller.abort();
  await assertBodyError(reading, 408, "body_timeout");
});

Deno.test("readBodyBounded rejects a negative limit", async () => {
  await assert.rejects(
    readBodyBounded(post(null), { limit: -1, acceptsZstd: false }),
    RangeError,
  );
});
