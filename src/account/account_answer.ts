/**
 * Accounts for one forwarded answer when it ends: the request and token
 * metrics, the day's token budget settled to what was generated, and the
 * request's log line.
 *
 * @module
 */

import type { Identity } from "../auth/identity.ts";
import type { BudgetReservation } from "../policy/budgets.ts";
import type { BodyEnd } from "../forward/answer_stream.ts";
import type { TokenCounts } from "../forward/token_tap.ts";
import type { Context } from "../runtime.ts";

/** How one answer ended. */
export interface AnsweredRequest {
  /** The upstream's status, passed on to the client. */
  readonly status: number;
  /** How it ended; `shutdown`: cut at the end of the shutdown grace. */
  readonly end: BodyEnd | "shutdown";
  /** Bytes passed on to the client. */
  readonly bytesOut: number;
  /** Token counts read from the answer, when it was counted. */
  readonly tokens?: TokenCounts;
  /**
   * The answer was not streamed: its counts come only at its very end,
   * after all its text, and Ollama generated all of it before the first
   * byte.
   */
  readonly countsAtEnd?: boolean;
}

/** Who and what the answer is accounted to. */
export interface AccountOptions {
  readonly context: Context;
  readonly identity: Identity;
  /** The route's label, as in metrics. */
  readonly route: string;
  /** Settled to the generated count (or content chunks when unreported). */
  readonly reservation: BudgetReservation;
}

/** Records `answer` in the metrics, the budget and the log. */
export function accountAnswer(
  answer: AnsweredRequest,
  options: AccountOptions,
): void {
  const { context, identity, route } = options;
  const { shared, trace } = context;
  const { tokens } = answer;
  const labels = {
    client: identity.client?.name ?? "-",
    user: identity.user ?? "-",
    auth: identity.auth,
    // A tag the caller made up resolves and passes a tagless rule, then
    // Ollama answers 404: such names must not become label values.
    model: answer.status === 404 ? "-" : trace.model ?? "-",
  };
  const duration = performance.now() - trace.start;

  if (answer.end === "upstream_error") {
    shared.metrics.upstreamBroken.inc({ route });
  }
  shared.metrics.requests.inc({
    ...labels,
    route,
    status: String(answer.status),
  });
  shared.metrics.requestDuration.observe({ route }, duration / 1000);

  if (tokens?.prompt !== undefined) {
    shared.metrics.tokens.inc({ ...labels, kind: "prompt" }, tokens.prompt);
  }
  const generated = charged(answer, options.reservation);
  settleWithin(options.reservation, generated ?? 0);
  if (generated) {
    shared.metrics.tokens.inc({ ...labels, kind: "generated" }, generated);
  }

  shared.log.info("response", {
    client: identity.client?.name,
    user: identity.user,
    auth: identity.auth,
    model: trace.model,
    route,
    status: answer.status,
    duration_ms: Math.round(duration),
    bytes_in: trace.bytesIn,
    bytes_out: answer.bytesOut,
    end: answer.end,
    prompt_tokens: tokens?.prompt,
    generated_tokens: generated,
  });
}

/**
 * The tokens an answer is charged: what it reported, else one per content
 * chunk streamed. A non-streamed answer the client abandons midway has no
 * counts to read and no chunks to count, though the client may have read
 * nearly all of it: it is charged its whole reservation, the generation
 * limit it carried, or abandoning answers would spend nothing.
 */
function charged(
  answer: AnsweredRequest,
  reservation: BudgetReservation,
): number | undefined {
  const { tokens } = answer;
  if (
    tokens !== undefined && tokens.generated === undefined &&
    answer.countsAtEnd === true && answer.end === "client_closed"
  ) {
    return reservation.amount;
  }
  return tokens?.generated ?? tokens?.contentChunks;
}

/**
 * Settles `reservation` to `generated`, but never to more than the request
 * was allowed: a stream the guard cuts at its cap has read one chunk past
 * it, and that chunk never reached the client.
 */
function settleWithin(reservation: BudgetReservation, generated: number): void {
  // A request outside every budget reserves nothing: there is no bound.
  reservation.settle(
    reservation.amount > 0
      ? Math.min(generated, reservation.amount)
      : generated,
  );
}
