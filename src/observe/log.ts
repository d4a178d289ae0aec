/**
 * One JSON object per line: `{"time": ISO-8601, "level", "msg", ...fields}`.
 *
 * Writing to stdout goes through a small asynchronous queue: a slow reader of
 * stdout (a full pipe to journald, a paused terminal) then delays log lines,
 * never the event loop that serves requests. Lines are only ever written
 * whole, one batch at a time, so two lines cannot interleave. The queue is
 * bounded; lines logged while it is full are dropped and counted, and the
 * count is reported in a line of its own once the queue drains.
 *
 * @module
 */

/** Severity of a log line, lowest first. */
export type LogLevel = "debug" | "info" | "warn" | "error";

const LEVEL_RANK: Readonly<Record<LogLevel, number>> = {
  debug: 0,
  info: 1,
  warn: 2,
  error: 3,
};

/** Keys every line starts with; fields of the same name are ignored. */
const RESERVED_KEYS = new Set(["time", "level", "msg"]);

/** Options for {@linkcode Logger}. */
export interface LoggerOptions {
  /**
   * Receives each line as a string without its trailing newline. Defaults to
   * a queued, non-blocking writer to stdout. A sink that throws is ignored.
   */
  sink?: (line: string) => void;
  /** Lines below this level are not written. Default `info`. */
  level?: LogLevel;
  /** The clock stamped into `time`. Default `() => new Date()`. */
  now?: () => Date;
}

/**
 * A structured logger. It never throws: values JSON cannot represent are
 * turned into strings, and a failing sink is ignored.
 *
 * @example
 * ```ts
 * const log = new Logger({ level: "info" });
 * log.warn("request refused", { client: "ci", reason: "rate_limited" });
 * // {"time":"2026-…","level":"warn","msg":"request refused","client":"ci","reason":"rate_limited"}
 * ```
 */
export class Logger {
  readonly #sink: (line: string) => void;
  readonly #stdout: StdoutQueue | undefined;
  readonly #minRank: number;
  readonly #now: () => Date;

  constructor(options: LoggerOptions = {}) {
    const level = options.level ?? "info";
    if (!(level in LEVEL_RANK)) {
      throw new RangeError(
        `log level: "${level}" is not a level; use debug, info, warn or error`,
      );
    }
    this.#minRank = LEVEL_RANK[level];
    if (options.sink) {
      this.#sink = options.sink;
    } else {
      const stdout = new StdoutQueue();
      this.#stdout = stdout;
      this.#sink = (line) => stdout.write(line);
    }
    this.#now = options.now ?? (() => new Date());
  }

  /** Writes a `debug` line. */
  debug(msg: string, fields?: Record<string, unknown>): void {
    this.#write("debug", msg, fields);
  }

  /** Writes an `info` line. */
  info(msg: string, fields?: Record<string, unknown>): void {
    this.#write("info", msg, fields);
  }

  /** Writes a `warn` line (denials log here, with a `reason`). */
  warn(msg: string, fields?: Record<string, unknown>): void {
    this.#write("warn", msg, fields);
  }

  /** Writes an `error` line. */
  error(msg: string, fields?: Record<string, unknown>): void {
    this.#write("error", msg, fields);
  }

  /** Whether a line at `level` would be written (to skip costly fields). */
  enabled(level: LogLevel): boolean {
    return LEVEL_RANK[level] >= this.#minRank;
  }

  /**
   * Resolves once every line logged so far has reached stdout (call before
   * exiting). Resolves at once with an injected sink.
   */
  flush(): Promise<void> {
    return this.#stdout?.flush() ?? Promise.resolve();
  }

  #write(
    level: LogLevel,
    msg: string,
    fields: Record<string, unknown> | undefined,
  ): void {
    if (LEVEL_RANK[level] < this.#minRank) return;

    let line: string;
    try {
      line = formatLine(this.#now(), level, msg, fields);
    } catch (error) {
      // A cycle or a getter that throws: keep the message, say what failed.
      line = JSON.stringify({
        time: safeIso(this.#now),
        level,
        msg: String(msg),
        log_error: `fields not serializable: ${describe(error)}`,
      });
    }

    try {
      this.#sink(line);
    } catch {
      // Logging must never take a request down with it.
    }
  }
}

function formatLine(
  time: Date,
  level: LogLevel,
  msg: string,
  fields: Record<string, unknown> | undefined,
): string {
  const record: Record<string, unknown> = {
    time: time.toISOString(),
    level,
    msg,
  };
  if (fields !== undefined) {
    for (const key of Object.keys(fields)) {
      if (RESERVED_KEYS.has(key)) continue;
      const value = fields[key];
      if (value === undefined) continue;
      record[key] = loggable(value);
    }
  }
  return JSON.stringify(record);
}

/** Makes top-level values that JSON drops or rejects readable. */
function loggable(value: unknown): unknown {
  if (value instanceof Error) return `${value.name}: ${value.message}`;
  if (typeof value === "bigint") return value.toString();
  return value;
}

function safeIso(now: () => Date): string {
  try {
    return now().toISOString();
  } catch {
    return new Date(0).toISOString();
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Bytes waiting to be written before new lines are dropped. */
const MAX_QUEUED_BYTES = 8 * 1024 * 1024;

/**
 * Queues lines and writes them to stdout asynchronously, one batch at a time,
 * each batch made of whole lines.
 */
class StdoutQueue {
  readonly #encoder = new TextEncoder();
  #queue: string[] = [];
  #queuedBytes = 0;
  #dropped = 0;
  #draining: Promise<void> | undefined;

  write(line: string): void {
    if (this.#queuedBytes + line.length > MAX_QUEUED_BYTES) {
      this.#dropped++;
      return;
    }
    this.#queue.push(line + "\n");
    this.#queuedBytes += line.length + 1;
    this.#draining ??= this.#drain();
  }

  /** Resolves once every queued line has been written. */
  flush(): Promise<void> {
    return this.#draining ?? Promise.resolve();
  }

  async #drain(): Promise<void> {
    try {
      while (this.#queue.length > 0) {
        const batch = this.#encoder.encode(this.#queue.join(""));
        this.#queue = [];
        this.#queuedBytes = 0;
        await writeAll(batch);
        if (this.#dropped > 0 && this.#queue.length === 0) {
          this.#queue.push(droppedLinesNotice(this.#dropped));
          this.#dropped = 0;
        }
      }
    } catch {
      // stdout is closed or broken: nothing useful is left to do with lines.
      this.#queue = [];
      this.#queuedBytes = 0;
    } finally {
      this.#draining = undefined;
    }
  }
}

function droppedLinesNotice(count: number): string {
  return JSON.stringify({
    time: new Date().toISOString(),
    level: "warn",
    msg: "log lines dropped: stdout was not keeping up",
    dropped_lines: count,
  }) + "\n";
}

async function writeAll(bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) {
    offset += await Deno.stdout.write(bytes.subarray(offset));
  }
}
