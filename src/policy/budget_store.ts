/**
 * The `state_file`: today's token usage of every subject, so budgets survive
 * a restart. Written atomically (a temporary file in the same directory,
 * synced, then renamed over the old one), so a crash leaves either the old
 * or the new file, never half of one.
 *
 * A missing file is a first run and starts from zero. A file that cannot be
 * read or does not hold usage stops startup: Butler never forgets what was
 * spent on its own.
 *
 * File format (JSON, one object):
 *
 * ```json
 * {
 *   "version": 1,
 *   "time_zone": "UTC",
 *   "saved_at": "2026-05-01T12:00:00.000Z",
 *   "usage": { "client:app": { "day": "2026-05-01", "generated": 1234 } }
 * }
 * ```
 *
 * @module
 */

import type { DayUsage, TokenBudgets, UsageSnapshot } from "./budgets.ts";

/** The state file cannot be used; the message says how to proceed. */
export class StateFileError extends Error {
  /** The state file's path. */
  readonly path: string;

  /** Builds the error for `path`, whose `problem` is described. */
  constructor(path: string, problem: string) {
    super(
      `state_file ${path}: ${problem}. Butler does not start from zero on ` +
        `its own: fix the file, or move it aside (mv ${path} ${path}.bad) ` +
        `to start every token budget from zero`,
    );
    this.name = "StateFileError";
    this.path = path;
  }
}

const FORMAT_VERSION = 1;
const DAY = /^\d{4}-\d{2}-\d{2}$/;

/**
 * Reads the usage in the state file at `path`; undefined when there is no
 * file (a first run, or a mistyped path: the caller says so in its log).
 *
 * @throws {StateFileError} when the file cannot be read or is not a state
 * file of this format.
 */
export async function readUsage(
  path: string,
): Promise<UsageSnapshot | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw new StateFileError(
      path,
      `cannot be read (${error instanceof Error ? error.message : error})`,
    );
  }
  return parseUsage(path, text);
}

/** Parses the text of a state file; throws {@linkcode StateFileError}. */
export function parseUsage(path: string, text: string): UsageSnapshot {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (error) {
    throw new StateFileError(
      path,
      `is not valid JSON (${error instanceof Error ? error.message : error})`,
    );
  }
  if (!isRecord(data)) {
    throw new StateFileError(path, "does not hold a JSON object");
  }
  if (data.version !== FORMAT_VERSION) {
    throw new StateFileError(
      path,
      `has version ${JSON.stringify(data.version)}; this Butler reads ` +
        `version ${FORMAT_VERSION}`,
    );
  }
  if (!isRecord(data.usage)) {
    throw new StateFileError(path, `"usage" must be an object`);
  }
  const usage: Record<string, DayUsage> = {};
  for (const [key, value] of Object.entries(data.usage)) {
    if (
      !isRecord(value) || typeof value.day !== "string" ||
      !DAY.test(value.day) || !Number.isSafeInteger(value.generated) ||
      (value.generated as number) < 0
    ) {
      throw new StateFileError(
        path,
        `usage[${JSON.stringify(key)}] must be ` +
          `{"day": "YYYY-MM-DD", "generated": <integer >= 0>}`,
      );
    }
    usage[key] = { day: value.day, generated: value.generated as number };
  }
  return usage;
}

/**
 * Writes `usage` to `path` atomically: a temporary file next to it, synced
 * to disk, renamed over `path`. Needs write access to the directory only.
 */
export async function writeUsage(
  path: string,
  options: { usage: UsageSnapshot; timeZone: string },
): Promise<void> {
  const text = JSON.stringify(
    {
      version: FORMAT_VERSION,
      time_zone: options.timeZone,
      saved_at: new Date().toISOString(),
      usage: options.usage,
    },
    null,
    2,
  ) + "\n";
  const temporary = `${directoryOf(path)}/.${baseName(path)}.${Deno.pid}.tmp`;
  const file = await Deno.open(temporary, {
    write: true,
    create: true,
    truncate: true,
    mode: 0o600,
  });
  try {
    const bytes = new TextEncoder().encode(text);
    for (let written = 0; written < bytes.length;) {
      written += await file.write(bytes.subarray(written));
    }
    await file.syncData();
  } finally {
    file.close();
  }
  try {
    await Deno.rename(temporary, path);
  } catch (error) {
    await Deno.remove(temporary).catch(() => {});
    throw error;
  }
}

/** Saves usage in the background; see {@linkcode startUsageSaver}. */
export interface UsageSaver {
  /**
   * Writes the usage now when it changed since the last write, or in any
   * case with `always` (at shutdown).
   */
  flush(options?: { always?: boolean }): Promise<void>;
  /** Stops the timer (call {@linkcode UsageSaver.flush} after it). */
  stop(): void;
}

/**
 * Writes `budgets`' usage to `path` every `intervalMs` (default 5 s) when it
 * changed. A failed write is reported to `onError` and retried at the next
 * tick; the counts in memory stay right.
 */
export function startUsageSaver(
  budgets: TokenBudgets,
  options: {
    path: string;
    intervalMs?: number;
    onError: (error: unknown) => void;
  },
): UsageSaver {
  let writing: Promise<void> = Promise.resolve();
  function flush(flushOptions: { always?: boolean } = {}): Promise<void> {
    writing = writing.then(async () => {
      if (!budgets.dirty && !flushOptions.always) return;
      budgets.markSaved();
      try {
        await writeUsage(options.path, {
          usage: budgets.snapshot(),
          timeZone: budgets.timeZone,
        });
      } catch (error) {
        budgets.markDirty();
        options.onError(error);
      }
    });
    return writing;
  }
  const timer = setInterval(() => void flush(), options.intervalMs ?? 5000);
  return {
    flush,
    stop: () => clearInterval(timer),
  };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function directoryOf(path: string): string {
  const slash = path.lastIndexOf("/");
  if (slash < 0) return ".";
  return slash === 0 ? "/" : path.slice(0, slash);
}

function baseName(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}
