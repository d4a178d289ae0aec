/**
 * The body Butler sends the upstream: the policy's rewrite of the body it
 * read, else the bytes it read exactly as received, else (routes whose body
 * Butler does not read, such as blob uploads) the client's body streamed
 * through within the size limit.
 *
 * @module
 */

import { type UploadBody, watchUpload } from "./upload_body.ts";
import { type JsonNode, serializeJson } from "../request/go_json.ts";

/** What the request path knows about the body by the forward step. */
export interface RequestBodySource {
  /** The body as the policy rewrote it (a cap or default added). */
  readonly rewritten?: JsonNode;
  /** The bytes read in the body step, or null when it was not read. */
  readonly readBytes: Uint8Array | null;
  /**
   * The policies' `max_request_bytes` for bodies streamed through unread
   * (model blobs); undefined: no limit, since blobs are model-sized.
   */
  readonly limit: number | undefined;
}

/** The body to forward for `request`, and the upload watch when it streams. */
export function upstreamBody(
  request: Request,
  source: RequestBodySource,
): { body: BodyInit | null; upload?: UploadBody } {
  if (source.rewritten !== undefined) {
    return { body: serializeJson(source.rewritten) };
  }
  if (source.readBytes !== null) {
    return { body: source.readBytes as Uint8Array<ArrayBuffer> };
  }
  if (request.method === "GET" || request.method === "HEAD") {
    return { body: null };
  }
  if (request.body === null) return { body: null };
  const upload = watchUpload(request.body, source.limit);
  return { body: upload.stream, upload };
}
