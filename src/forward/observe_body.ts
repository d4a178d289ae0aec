/**
 * Counts the bytes of a response body on their way to the client and
 * reports once when the body ends, however it ends: finished, cancelled by
 * the client, or broken by the upstream.
 *
 * @module
 */

/** How a response body ended. */
export type BodyEnd = "complete" | "client_closed" | "upstream_error";

/** Options for {@linkcode observeBody}. */
export interface ObserveBodyOptions {
  /** Called exactly once, when the body ends, with the bytes passed on. */
  readonly onEnd: (end: BodyEnd, bytes: number) => void;
  /**
   * When the upstream breaks off the body: the bytes to send the client
   * before ending the body normally (an error in the stream's dialect).
   * Gets the last bytes already sent (up to two). Without it, or when it
   * returns undefined, the body errors (the connection is cut).
   */
  readonly errorEnding?: (tail: Uint8Array) => Uint8Array | undefined;
}

/**
 * Passes `body` through, counting bytes, and calls `onEnd` exactly once.
 * Chunks are forwarded as they arrive, unchanged.
 */
export function observeBody(
  body: ReadableStream<Uint8Array>,
  options: ObserveBodyOptions,
): ReadableStream<Uint8Array> {
  let bytes = 0;
  let ended = false;
  const tail = new Uint8Array(2);
  let tailLength = 0;
  const end = (how: BodyEnd) => {
    if (ended) return;
    ended = true;
    options.onEnd(how, bytes);
  };
  const reader = body.getReader();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      let result: ReadableStreamReadResult<Uint8Array>;
      try {
        result = await reader.read();
      } catch (error) {
        end("upstream_error");
        const ending = options.errorEnding?.(tail.subarray(2 - tailLength));
        if (ending === undefined) {
          controller.error(error);
          return;
        }
        controller.enqueue(ending);
        controller.close();
        return;
      }
      const { done, value } = result;
      if (done) {
        controller.close();
        end("complete");
        return;
      }
      bytes += value.byteLength;
      if (value.byteLength >= 2) {
        tail.set(value.subarray(value.byteLength - 2));
        tailLength = 2;
      } else if (value.byteLength === 1) {
        tail[0] = tail[1];
        tail[1] = value[0];
        tailLength = Math.min(2, tailLength + 1);
      }
      controller.enqueue(value);
    },
    cancel(reason) {
      end("client_closed");
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
}
