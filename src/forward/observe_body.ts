/**
 * Counts the bytes of a response body on their way to the client and
 * reports once when the body ends, however it ends: finished, cancelled by
 * the client, or broken by the upstream.
 *
 * @module
 */

/** How a response body ended. */
export type BodyEnd = "complete" | "client_closed" | "upstream_error";

/**
 * Pipes `body` through a pass-through that counts bytes and calls `onEnd`
 * exactly once. Chunks are forwarded as they arrive, unchanged.
 */
export function observeBody(
  body: ReadableStream<Uint8Array>,
  onEnd: (end: BodyEnd, bytes: number) => void,
): ReadableStream<Uint8Array> {
  let bytes = 0;
  let ended = false;
  const end = (how: BodyEnd) => {
    if (ended) return;
    ended = true;
    onEnd(how, bytes);
  };
  const reader = body.getReader();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const { done, value } = await reader.read();
        if (done) {
          controller.close();
          end("complete");
          return;
        }
        bytes += value.byteLength;
        controller.enqueue(value);
      } catch (error) {
        end("upstream_error");
        controller.error(error);
      }
    },
    cancel(reason) {
      end("client_closed");
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
}
