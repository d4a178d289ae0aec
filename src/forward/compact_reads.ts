/**
 * Reads a streamed upstream body into one small buffer that is reused, and
 * hands out exact-size copies of what arrived.
 *
 * Read with a default reader, each pending read of a `fetch` body holds a
 * fresh 64 KiB buffer, and every chunk passed on keeps its whole buffer
 * alive until it is collected: a token stream of 100-byte chunks then costs
 * tens of KiB per open stream and a steady flow of garbage. Reading into a
 * reused buffer (a BYOB reader) keeps one small buffer per stream.
 *
 * The buffer starts small, because a token stream sends a few hundred bytes
 * at a time and thousands of them may be open, and doubles whenever a read
 * fills it, because then the upstream is sending a large body (an embedding,
 * a long answer not streamed) faster than it is read.
 *
 * @module
 */

/** Size of the reused read buffer at first, bytes. */
const INITIAL_BUFFER_BYTES = 4 * 1024;

/** The buffer grows up to this size, bytes. */
const MAX_BUFFER_BYTES = 64 * 1024;

/** Options for {@linkcode CompactReader}. */
export interface CompactReaderOptions {
  /** Size of the read buffer at first (default 4 KiB). */
  readonly bufferBytes?: number;
  /** Size the buffer may grow to (default 64 KiB, at least `bufferBytes`). */
  readonly maxBufferBytes?: number;
}

/**
 * Reads `body` through a reused buffer. Each read returns what the socket
 * had, up to the buffer's size, as a new exact-size array; a read that fills
 * the buffer doubles it for the next one, up to `maxBufferBytes`. A body
 * that is not a byte stream is read as it is (its own chunks).
 */
export class CompactReader {
  readonly #byob: ReadableStreamBYOBReader | undefined;
  readonly #plain: ReadableStreamDefaultReader<Uint8Array> | undefined;
  readonly #maxBytes: number;
  #buffer: Uint8Array<ArrayBuffer>;

  constructor(
    body: ReadableStream<Uint8Array>,
    options: CompactReaderOptions = {},
  ) {
    try {
      this.#byob = body.getReader({ mode: "byob" });
    } catch {
      this.#plain = body.getReader();
    }
    const initial = options.bufferBytes ?? INITIAL_BUFFER_BYTES;
    this.#maxBytes = Math.max(
      initial,
      options.maxBufferBytes ?? MAX_BUFFER_BYTES,
    );
    this.#buffer = new Uint8Array(this.#byob ? initial : 0);
  }

  /** The size of the buffer the next read goes into (0 for a plain body). */
  get bufferBytes(): number {
    return this.#buffer.byteLength;
  }

  /** The next chunk, or undefined at the end. Rejects when the body errors. */
  async read(): Promise<Uint8Array | undefined> {
    if (this.#plain !== undefined) {
      const { done, value } = await this.#plain.read();
      return done ? undefined : value;
    }
    const { done, value } = await this.#byob!.read(this.#buffer);
    if (value === undefined) return undefined;
    if (done) {
      // The buffer comes back, empty, with the end.
      this.#buffer = new Uint8Array(value.buffer);
      return undefined;
    }
    const copy = value.slice();
    // The read transferred the buffer; `value` views the one to reuse,
    // unless it came back full: then a larger one serves the next read.
    const size = value.buffer.byteLength;
    this.#buffer = value.byteLength === size && size < this.#maxBytes
      ? new Uint8Array(Math.min(size * 2, this.#maxBytes))
      : new Uint8Array(value.buffer);
    return copy;
  }

  /** Cancels the body (the upstream request stops). */
  cancel(reason?: unknown): Promise<void> {
    return (this.#byob ?? this.#plain)!.cancel(reason);
  }
}
