/**
 * A client's body that Butler passes to Ollama unread (a model blob upload),
 * watched on its way: bounded by the policies' `max_request_bytes`, counted,
 * and, when it fails, with the reason kept. `fetch` reports any body failure
 * as a network error, so without this a client hanging up mid-upload, or
 * sending more than its limit, would look like Ollama being down.
 *
 * @module
 */

/** Why an upload did not reach Ollama whole. */
export type UploadProblem = "too_large" | "client_gone";

/** The watched body and what is known about it. */
export interface UploadBody {
  /** The stream to send upstream. */
  readonly stream: ReadableStream<Uint8Array>;
  /** Bytes passed on so far. */
  bytes(): number;
  /** Why the body failed, once it has; undefined while it has not. */
  problem(): UploadProblem | undefined;
}

/**
 * Watches `body`: at most `limit` bytes pass (undefined: no limit); a body
 * that errors while being read is the client's doing (`client_gone`).
 *
 * @example
 * ```ts
 * const upload = watchUpload(request.body!, 64 * 2 ** 20);
 * await fetch(url, { method: "POST", body: upload.stream });
 * upload.problem(); // "too_large" when the client sent more
 * ```
 */
export function watchUpload(
  body: ReadableStream<Uint8Array>,
  limit: number | undefined,
): UploadBody {
  const reader = body.getReader();
  let seen = 0;
  let problem: UploadProblem | undefined;
  const stream = new ReadableStream<Uint8Array>({
    async pull(controller) {
      let result: ReadableStreamReadResult<Uint8Array>;
      try {
        result = await reader.read();
      } catch (error) {
        problem ??= "client_gone";
        controller.error(error);
        return;
      }
      if (result.done) {
        controller.close();
        return;
      }
      seen += result.value.byteLength;
      if (limit !== undefined && seen > limit) {
        problem = "too_large";
        reader.cancel().catch(() => {});
        controller.error(new RangeError(`body exceeds ${limit} bytes`));
        return;
      }
      controller.enqueue(result.value);
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
  return { stream, bytes: () => seen, problem: () => problem };
}
