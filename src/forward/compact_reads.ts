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
 * @module
 */

/** Size of the reused read buffer, bytes. */
const DEFAULT_BUFFER_BYTES = 16 * 1024;

/**
 * Reads `body` through a reused buffer of `bufferBytes`. Each read returns
 * what the socket had, up to the buffer's size, as a new exact-size array.
 * A body that is not a byte stream is read as it is (its own chunks).
 */
export class CompactReader {
  readonly #byob: ReadableStreamBYOBReader | undefined;
  readonly #plain: ReadableStreamDefaultReader<Uint8Array> | undefined;
  #buffer: Uint8Array<ArrayBuffer>;

  constructor(
    body: ReadableStream<Uint8Array>,
    options: { bufferBytes?: number } = {},
  ) {
    try {
      this.#byob = body.getReader({ mode: "byob" });
    } catch {
      this.#plain = body.getReader();
    }
    this.#buffer = new Uint8Array(
      this.#byob ? options.bufferBytes ?? DEFAULT_BUFFER_BYTES : 0,
    );
  }

  /** The next chunk, or undefined at the end. Rejects when the body errors. */
  async read(): Promise<Uint8Array | undefined> {
    if (this.#plain !== undefined) {
      const { done, value } = await this.#plain.read();
      return done ? undefined : value;
    }
    const { done, value } = await this.#byob!.read(this.#buffer);
    if (done || value === undefined) return undefined;
    const copy = value.slice();
    // The read transferred the buffer; `value` views the one to reuse.
    this.#buffer = new Uint8Array(value.buffer);
    return copy;
  }

  /** Cancels the body (the upstream request stops). */
  cancel(reason?: unknown): Promise<void> {
    return (this.#byob ?? this.#plain)!.cancel(reason);
  }
}
