/**
 * A refusal is a value: status, a stable reason code (logged and used as a
 * metric label) and a message the client's user can read. It becomes a
 * response in the route's dialect in exactly one place, `renderRefusal`.
 *
 * @module
 */

/** The error shape a client expects on a route. */
export type Dialect = "native" | "openai" | "anthropic";

export interface Refusal {
  readonly status: number;
  /** Stable snake_case code, e.g. `model_denied`, `rate_limited`. */
  readonly reason: string;
  /** Human-readable; never contains a secret or a prompt. */
  readonly message: string;
  /** Extra response headers, e.g. `Retry-After`. */
  readonly headers?: Readonly<Record<string, string>>;
  /** Extra fields for the warn log line (never secrets or prompts). */
  readonly detail?: Readonly<Record<string, unknown>>;
}

/** Builds a refusal value. */
export function refuse(
  status: number,
  reason: string,
  message: string,
  extra: Pick<Refusal, "headers" | "detail"> = {},
): Refusal {
  return { status, reason, message, ...extra };
}

/** Type guard: is `value` a refusal? */
export function isRefusal(value: unknown): value is Refusal {
  return typeof value === "object" && value !== null &&
    "status" in value && "reason" in value && "message" in value &&
    !(value instanceof Response);
}
