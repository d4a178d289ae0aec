/**
 * bcrypt compares on a worker thread. bcryptjs computes in JavaScript and
 * yields only every 100 ms, so a compare at cost 12 (about a quarter of a
 * second) on the main thread holds up every request and every open stream
 * for that long, and a few logins in a row stall the whole gateway. Each
 * compare here runs in a short-lived worker of its own, so the event loop
 * that serves requests never waits for one.
 *
 * The worker's module is built from a string (a blob URL), not loaded from a
 * file: Butler's sandbox grants read access to its config only, and a file
 * worker would need read access to its own source. It imports the same
 * pinned `bcryptjs` through the import map.
 *
 * @module
 */

import bcrypt from "bcryptjs";

const WORKER_SOURCE = `import bcrypt from "bcryptjs";
self.onmessage = async (event) => {
  let matches = false;
  try {
    matches = await bcrypt.compare(event.data.password, event.data.hash);
  } catch {
    matches = false;
  }
  self.postMessage(matches);
};
`;

/** A worker could not be started or failed before answering. */
export class PasswordWorkerError extends Error {
  /** Builds the error; `reason` says what the platform reported. */
  constructor(reason: string) {
    super(`bcrypt worker unavailable: ${reason}`);
    this.name = "PasswordWorkerError";
  }
}

let workerUrl: string | undefined;

/**
 * Compares `password` with the bcrypt `hash` on a worker thread of its own.
 * Rejects with {@linkcode PasswordWorkerError} when no worker can run (the
 * caller may then compare on its own thread).
 *
 * @example
 * ```ts
 * const ok = await compareOffThread("hunter2", user.passwordHash);
 * ```
 */
export async function compareOffThread(
  password: string,
  hash: string,
): Promise<boolean> {
  workerUrl ??= URL.createObjectURL(
    new Blob([WORKER_SOURCE], { type: "text/javascript" }),
  );
  let worker: Worker;
  try {
    worker = new Worker(workerUrl, { type: "module" });
  } catch (error) {
    throw new PasswordWorkerError(describe(error));
  }
  try {
    return await new Promise<boolean>((resolve, reject) => {
      worker.onmessage = (event: MessageEvent) => resolve(event.data === true);
      worker.onerror = (event: ErrorEvent) => {
        event.preventDefault();
        reject(new PasswordWorkerError(event.message));
      };
      worker.onmessageerror = () =>
        reject(new PasswordWorkerError("message could not be read"));
      worker.postMessage({ password, hash });
    });
  } finally {
    worker.terminate();
  }
}

/** Options of {@linkcode createPasswordCompare}. */
export interface PasswordCompareOptions {
  /**
   * Called once, the first time a worker cannot run; from then on compares
   * run on the calling thread (correct, but they hold up other requests).
   */
  readonly onFallback?: (reason: string) => void;
}

/**
 * A compare function that runs each compare on a worker thread, falling back
 * to bcryptjs on the calling thread for good if workers cannot run.
 */
export function createPasswordCompare(
  options: PasswordCompareOptions = {},
): (password: string, hash: string) => Promise<boolean> {
  let workersBroken = false;
  return async (password, hash) => {
    if (!workersBroken) {
      try {
        return await compareOffThread(password, hash);
      } catch (error) {
        if (!(error instanceof PasswordWorkerError)) throw error;
        workersBroken = true;
        options.onFallback?.(error.message);
      }
    }
    return await bcrypt.compare(password, hash);
  };
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
