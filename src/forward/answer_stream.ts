/**
 * The upstream's streamed answer on its way to the client, in one stage:
 * read through a reused buffer, token counts read as the chunks pass,
 * Butler's usage request undone, the generation cap enforced, bytes counted,
 * and the end reported once however the answer ends: finished, cut at the
 * cap, cancelled by the client, or broken off by the upstream (then closed
 * with an error in the stream's dialect).
 *
 * Every chunk costs one read of the upstream and synchronous work; there are
 * no stream layers in between, so no promise hop and no queue per layer.
 * Routes that generate nothing are passed through without framing.
 *
 * @module
 */

import { CompactReader } from "./compact_reads.ts";
import {
  TokenCounter,
  type TokenCounterOptions,
  type TokenCounts,
} from "./token_tap.ts";
import { type Emit, StreamCapper } from "./stream_cap.ts";
import { UsageStripper } from "./usage_strip.ts";

/** How an answer body ended. */
export type BodyEnd = "complete" | "client_closed" | "upstream_error";

/** What is known when an answer body ends. */
export interface AnswerEnd {
  /** How it ended. A cut at the cap is `complete`. */
  readonly end: BodyEnd;
  /** Bytes passed on to the client, an error ending not included. */
  readonly bytes: number;
  /** What the token counter read, when the answer was counted. */
  readonly tokens?: TokenCounts;
}

/** Options for {@linkcode answerStream}. */
export interface AnswerStreamOptions {
  /** Count tokens in an answer of this framing and dialect. */
  readonly count?: TokenCounterOptions;
  /**
   * Remove the usage Butler asked for on the client's behalf (OpenAI SSE
   * only; needs `count` with `format: "sse"`).
   */
  readonly stripUsage?: boolean;
  /**
   * End the answer after this many content chunks the way its dialect ends
   * a length-limited answer (needs `count` with a streamed format);
   * `onCut` is called once when it does. `maxHeldBytes`: see
   * {@linkcode StreamCapper}.
   */
  readonly cap?: { limit: number; onCut: () => void; maxHeldBytes?: number };
  /**
   * When the upstream breaks off the body: the bytes to send the client
   * before ending the body normally (an error in the stream's dialect).
   * Gets the last bytes already sent (up to two). Without it, or when it
   * returns undefined, the body errors (the connection is cut).
   */
  readonly errorEnding?: (tail: Uint8Array) => Uint8Array | undefined;
  /**
   * Called exactly once, when the body ends. Exceptions thrown by it are
   * swallowed: accounting must not break the client's stream.
   */
  readonly onEnd: (end: AnswerEnd) => void;
  /**
   * Size of the reused read buffer at first (default 4 KiB; it grows while
   * reads fill it), see {@linkcode CompactReader}.
   */
  readonly bufferBytes?: number;
}

/**
 * The client's body for the upstream answer `body`. Chunks that need no
 * change are passed on as read; cancelling it cancels `body`.
 *
 * @example
 * ```ts
 * const answer = answerStream(upstream.body!, {
 *   count: { format: "ndjson", dialect: "native" },
 *   onEnd: ({ end, bytes, tokens }) => log.info("response", { end, bytes }),
 * });
 * return new Response(answer, { headers });
 * ```
 */
export function answerStream(
  body: ReadableStream<Uint8Array>,
  options: AnswerStreamOptions,
): ReadableStream<Uint8Array> {
  const reader = new CompactReader(body, { bufferBytes: options.bufferBytes });
  const stage = new AnswerStage(options);
  return new ReadableStream<Uint8Array>({
    start(controller) {
      stage.controller = controller;
    },
    async pull() {
      // Read until something is sent: held bytes of an unfinished event
      // need no new pull from the client.
      while (true) {
        let chunk: Uint8Array | undefined;
        try {
          chunk = await reader.read();
        } catch (error) {
          stage.upstreamBroke(error);
          return;
        }
        if (chunk === undefined) {
          stage.finish();
          return;
        }
        if (stage.push(chunk)) {
          // Cut at the cap: the ending is sent, the upstream need not go on.
          reader.cancel("generation cap reached").catch(() => {});
          return;
        }
        if (stage.sentSomething()) return;
      }
    },
    cancel(reason) {
      stage.clientClosed();
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
}

/** The synchronous part of the stage: what happens to each chunk. */
class AnswerStage {
  controller!: ReadableStreamDefaultController<Uint8Array>;
  readonly #options: AnswerStreamOptions;
  readonly #counter: TokenCounter | undefined;
  readonly #stripper: UsageStripper | undefined;
  readonly #capper: StreamCapper | undefined;
  #bytes = 0;
  #sentInPull = false;
  #cut = false;
  #ended = false;
  /** The last two bytes sent, for the error ending. */
  readonly #tail = new Uint8Array(2);
  #tailLength = 0;
  readonly #send: Emit = (bytes) => this.#sendBytes(bytes);
  readonly #toCapper: Emit = (bytes) => {
    if (this.#capper!.push(bytes, this.#send)) this.#cut = true;
  };

  constructor(options: AnswerStreamOptions) {
    this.#options = options;
    const count = options.count;
    if (count === undefined) return;
    this.#counter = new TokenCounter(count);
    if (count.format === "json") return;
    if (options.stripUsage && count.format === "sse") {
      this.#stripper = new UsageStripper();
    }
    if (options.cap !== undefined) {
      this.#capper = new StreamCapper({
        dialect: count.dialect,
        format: count.format,
        cap: options.cap.limit,
        onCut: options.cap.onCut,
        maxHeldBytes: options.cap.maxHeldBytes,
      });
    }
  }

  /** Whether the last `push` sent any bytes; resets the flag. */
  sentSomething(): boolean {
    const sent = this.#sentInPull;
    this.#sentInPull = false;
    return sent;
  }

  /** Handles one chunk; returns true when the answer was cut at the cap. */
  push(chunk: Uint8Array): boolean {
    this.#counter?.push(chunk);
    if (this.#stripper !== undefined) {
      this.#stripper.push(
        chunk,
        this.#capper === undefined ? this.#send : this.#toCapper,
      );
    } else if (this.#capper !== undefined) {
      this.#toCapper(chunk);
    } else {
      this.#sendBytes(chunk);
      return false;
    }
    if (!this.#cut) return false;
    this.controller.close();
    this.#end("complete");
    return true;
  }

  /** The upstream ended the body normally. */
  finish(): void {
    this.#counter?.end();
    if (!this.#cut) {
      const next = this.#capper === undefined ? this.#send : this.#toCapper;
      this.#stripper?.end(next);
      if (!this.#cut) this.#capper?.end(this.#send);
    }
    this.controller.close();
    this.#end("complete");
  }

  /** The upstream broke off the body. */
  upstreamBroke(error: unknown): void {
    this.#end("upstream_error");
    const ending = this.#options.errorEnding?.(
      this.#tail.subarray(2 - this.#tailLength),
    );
    if (ending === undefined) {
      this.controller.error(error);
      return;
    }
    this.controller.enqueue(ending);
    this.controller.close();
  }

  /** The client hung up. */
  clientClosed(): void {
    this.#end("client_closed");
  }

  #sendBytes(bytes: Uint8Array): void {
    const length = bytes.byteLength;
    this.#sentInPull = true;
    if (length === 0) {
      this.controller.enqueue(bytes);
      return;
    }
    this.#bytes += length;
    if (length >= 2) {
      this.#tail[0] = bytes[length - 2];
      this.#tail[1] = bytes[length - 1];
      this.#tailLength = 2;
    } else {
      this.#tail[0] = this.#tail[1];
      this.#tail[1] = bytes[0];
      this.#tailLength = Math.min(2, this.#tailLength + 1);
    }
    this.controller.enqueue(bytes);
  }

  #end(end: BodyEnd): void {
    if (this.#ended) return;
    this.#ended = true;
    try {
      this.#options.onEnd({
        end,
        bytes: this.#bytes,
        tokens: this.#counter?.counts(),
      });
    } catch {
      // Accounting failing must not fail the client's stream.
    }
  }
}
