/**
 * The forward step: sends the request to the upstream, and answers the
 * client with the upstream's answer as it arrives, accounted for when it
 * ends.
 *
 * @module
 */

import type { Identity } from "../auth/identity.ts";
import { isRefusal, type Refusal, refuse } from "../errors/refusal.ts";
import { renderRefusal } from "../errors/render.ts";
import type { Decision } from "../policy/decide.ts";
import type { BudgetReservation } from "../policy/budgets.ts";
import type { RouteMatch } from "../routes/table.ts";
import type { Context } from "../runtime.ts";
import { fetchUpstream } from "./upstream.ts";
import {
  clientResponseHeaders,
  isStreamingContentType,
  upstreamRequestHeaders,
} from "./headers.ts";
import { upstreamBody } from "./request_body.ts";
import type { UploadProblem } from "./upload_body.ts";
import { answerListing } from "./listing.ts";
import { type AnswerEnd, answerStream } from "./answer_stream.ts";
import { streamErrorEnding } from "./stream_error.ts";
import { countTokensInBody, type StreamFormat } from "./token_tap.ts";
import { tapDialectFor } from "./tap_dialect.ts";
import { accountAnswer } from "../account/account_answer.ts";

/**
 * Non-streamed answers up to this size (by their `content-length`) are read
 * whole before being sent on; larger ones stream through.
 */
const BUFFERED_ANSWER_BYTES = 256 * 1024;

/** What the forward step works with, gathered by the steps before it. */
export interface ForwardInput {
  readonly context: Context;
  readonly match: RouteMatch;
  readonly identity: Identity;
  readonly decision: Decision;
  /** The body bytes read in the body step, or null when it was not read. */
  readonly forwardBytes: Uint8Array | null;
  /** Rate-limit headers the answer carries. */
  readonly rateHeaders: Record<string, string>;
  /** Ends the exchange (frees the concurrency slot); called once. */
  readonly release: () => void;
  /** Aborted when the client hangs up or the shutdown grace period ends. */
  readonly signal: AbortSignal;
  /** Settled to the generated count when the answer ends. */
  readonly reservation: BudgetReservation;
  /**
   * The policies' `max_request_bytes` for bodies streamed through unread
   * (model blobs); undefined: no limit, since blobs are model-sized.
   */
  readonly limit: number | undefined;
}

/**
 * Forwards `request` and returns the client's answer, or a refusal (502,
 * 504) when the upstream gave no answer; the exchange is then released and
 * the reservation settled to zero.
 */
export async function forward(
  request: Request,
  input: ForwardInput,
): Promise<Response | Refusal> {
  const { context, match, identity, decision, release } = input;
  const { runtime, shared, trace } = context;
  const { route } = match;
  const clientName = identity.client?.name ?? "-";

  const { body: requestBody, upload } = upstreamBody(request, {
    rewritten: decision.rewrittenBody,
    readBytes: input.forwardBytes,
    limit: input.limit,
  });
  const fetched = await fetchUpstream({
    method: request.method,
    target: match.path + (route.kind === "transcribe" ? match.query : ""),
    headers: upstreamRequestHeaders(request.headers, {
      client: identity.client?.name,
      user: identity.user,
    }),
    body: requestBody,
    clientSignal: input.signal,
  }, {
    upstream: runtime.policy.upstream,
    timeoutMs: runtime.policy.upstreamTimeoutMs,
  });
  if (upload !== undefined) trace.bytesIn = upload.bytes();
  // An upload that failed on the client's side is not Ollama's failure.
  const uploadProblem = upload?.problem();
  const upstream = isRefusal(fetched) && uploadProblem !== undefined
    ? uploadRefusal(uploadProblem, input.limit)
    : fetched;
  if (isRefusal(upstream)) {
    release();
    input.reservation.settle(0);
    if (uploadProblem === undefined) {
      shared.metrics.upstreamUp.set(
        {},
        upstream.reason === "upstream_unavailable" ? 0 : 1,
      );
    }
    return upstream;
  }
  shared.metrics.upstreamUp.set({}, 1);
  const ttfb = (performance.now() - trace.start) / 1000;
  shared.metrics.timeToFirstByte.observe({ route: route.label }, ttfb);
  shared.metrics.inFlightRequests.inc({ client: clientName });

  // Listings show only what the caller may use.
  if (route.kind === "list_models" || route.kind === "list_running") {
    return await answerListing(upstream, {
      context,
      match,
      identity,
      rateHeaders: input.rateHeaders,
      release,
    });
  }

  const contentType = upstream.headers.get("content-type");
  const streaming = isStreamingContentType(contentType);
  if (streaming) shared.metrics.inFlightStreams.inc({ client: clientName });
  const format: StreamFormat = !streaming
    ? "json"
    : contentType!.includes("ndjson")
    ? "ndjson"
    : "sse";
  const dialect = route.kind === "generate"
    ? tapDialectFor(route.pattern)
    : undefined;
  // Usage Butler asked for on the client's behalf is read, then removed:
  // the client gets the stream it would have had without Butler.
  const stripUsage = dialect !== undefined && format === "sse" &&
    decision.stripUsage === true;
  // Some Ollama versions ignore the cap on OpenAI routes: the stream is
  // ended the way the dialect ends a length-limited answer.
  const cap = dialect !== undefined && format !== "json"
    ? decision.generationCap
    : undefined;

  const finish = (answer: AnswerEnd) => {
    release();
    shared.metrics.inFlightRequests.dec({ client: clientName });
    if (streaming) shared.metrics.inFlightStreams.dec({ client: clientName });
    accountAnswer({
      status: upstream.status,
      // Cut at the end of the shutdown grace: Butler's doing, not Ollama's.
      end: answer.end === "upstream_error" && context.shutdownSignal.aborted
        ? "shutdown"
        : answer.end,
      bytesOut: answer.bytes,
      tokens: answer.tokens,
      countsAtEnd: format === "json",
    }, {
      context,
      identity,
      route: route.label,
      reservation: input.reservation,
    });
  };

  const headers = clientResponseHeaders(upstream.headers, {
    bodyChanged: stripUsage || cap !== undefined,
  });
  for (const [name, value] of Object.entries(input.rateHeaders)) {
    headers.set(name, value);
  }
  if (streaming) headers.set("x-accel-buffering", "no");
  if (upstream.body === null) {
    finish({ end: "complete", bytes: 0 });
    return new Response(null, { status: upstream.status, headers });
  }

  // A small answer that is not a stream is read whole and sent as bytes:
  // no stream layers, and Deno writes it with its content length at once.
  if (
    !streaming &&
    Number(upstream.headers.get("content-length") ?? NaN) <=
      BUFFERED_ANSWER_BYTES
  ) {
    let bytes: Uint8Array<ArrayBuffer>;
    try {
      bytes = await upstream.bytes();
    } catch {
      finish({ end: "upstream_error", bytes: 0 });
      return renderRefusal(
        refuse(502, "upstream_error", "upstream broke off its answer"),
        route.dialect,
      );
    }
    finish({
      end: "complete",
      bytes: bytes.byteLength,
      tokens: dialect === undefined
        ? undefined
        : countTokensInBody(bytes, dialect),
    });
    return new Response(bytes, { status: upstream.status, headers });
  }

  const body = answerStream(upstream.body, {
    count: dialect === undefined ? undefined : { format, dialect },
    stripUsage,
    cap: cap === undefined ? undefined : {
      limit: cap,
      onCut: () =>
        shared.log.info("stream cut at cap", {
          route: route.label,
          client: identity.client?.name,
          cap,
        }),
    },
    // A stream the upstream breaks off ends with an error in its dialect.
    errorEnding: format === "json"
      ? undefined
      : (tail) =>
        streamErrorEnding(tail, {
          dialect: route.dialect,
          format,
          routePattern: route.pattern,
          message: context.shutdownSignal.aborted
            ? "Butler is shutting down; the answer was cut off"
            : "the upstream Ollama server broke off the answer",
        }),
    onEnd: finish,
  });
  return new Response(body, { status: upstream.status, headers });
}

/** The refusal for an upload the client broke off or sent too much of. */
function uploadRefusal(
  problem: UploadProblem,
  limit: number | undefined,
): Refusal {
  return problem === "too_large"
    ? refuse(
      413,
      "body_too_large",
      `request body exceeds the limit of ${limit} bytes`,
    )
    : refuse(499, "client_closed", "client closed the request");
}
