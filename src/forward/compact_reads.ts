/**
 * Reads a streamed upstream body into one small buffer that is reused, and
 * passes on exact-size copies of what arrived.
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
 * A stream of the same bytes as `body`, read through a reused buffer of
 * `bufferBytes`. Chunks are passed on as they arrive (each read returns what
 * the socket had, up to the buffer's size). Cancelling it cancels `body`.
 * A body that is not a byte stream is returned as it is.
 */
export function compactReads(
  body: ReadableStream<Uint8Array>,
  options: { bufferBytes?: number } = {},
): ReadableStream<Uint8Array> {
  let reader: ReadableStreamBYOBReader;
  try {
    reader = body.getReader({ mode: "byob" });
  } catch {
    return body;
  }
  let buffer = new Uint8Array(options.bufferBytes ?? DEFAULT_BUFFER_BYTES);
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const { done, value } = await reader.read(buffer);
      if (done || value === undefined) {
        controller.close();
        return;
      }
      controller.enqueue(value.slice());
      // The read transferred the buffer; `value` views the one to reuse.
      buffer = new Uint8Array(value.buffer);
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
}
