/**
 * Client-side stream measurements for the benchmark: one-way latency of
 * time-stamped chunks, time to first byte, and many slow streams held open.
 *
 * @module
 */

import { nowMicros } from "./stamp_upstream.ts";

/** Percentile `p` (0–100) of `values` (sorted copy; NaN when empty). */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const index = Math.min(
    sorted.length - 1,
    Math.max(0, Math.ceil((p / 100) * sorted.length) - 1),
  );
  return sorted[index];
}

/** Splits an NDJSON byte stream into lines, calling `onLine` per line. */
async function eachLine(
  body: ReadableStream<Uint8Array>,
  onLine: (line: string) => void,
): Promise<void> {
  const decoder = new TextDecoder();
  let pending = "";
  for await (const chunk of body) {
    pending += decoder.decode(chunk, { stream: true });
    let newline: number;
    while ((newline = pending.indexOf("\n")) >= 0) {
      onLine(pending.slice(0, newline));
      pending = pending.slice(newline + 1);
    }
  }
}

/**
 * Opens `streams` concurrent chat streams through `url` to the stamping
 * upstream and returns every chunk's one-way latency in milliseconds.
 */
export async function chunkLatencies(
  url: string,
  options: {
    streams: number;
    chunks: number;
    intervalMs: number;
    headers: Record<string, string>;
  },
): Promise<number[]> {
  const latencies: number[] = [];
  const body = JSON.stringify({
    model: "llama3.2",
    messages: [{ role: "user", content: "count" }],
  });
  await Promise.all(
    Array.from({ length: options.streams }, async () => {
      const response = await fetch(`${url}/api/chat`, {
        method: "POST",
        headers: {
          ...options.headers,
          "content-type": "application/json",
          "x-chunks": String(options.chunks),
          "x-interval-ms": String(options.intervalMs),
        },
        body,
      });
      if (response.status !== 200 || response.body === null) {
        throw new Error(`${url}: stream answered ${response.status}`);
      }
      await eachLine(response.body, (line) => {
        const arrived = nowMicros();
        const parsed = JSON.parse(line);
        if (parsed.done === false) {
          latencies.push((arrived - Number(parsed.message.content)) / 1000);
        }
      });
    }),
  );
  return latencies;
}

/**
 * Times `count` sequential streamed chats from the simulator: milliseconds
 * to the response headers and to the first body byte.
 */
export async function timeToFirstByte(
  url: string,
  options: { count: number; headers: Record<string, string> },
): Promise<{ headers: number[]; firstByte: number[] }> {
  const headersMs: number[] = [];
  const firstByteMs: number[] = [];
  const body = JSON.stringify({
    model: "llama3.2",
    messages: [{ role: "user", content: "hello" }],
  });
  for (let i = 0; i < options.count; i++) {
    const start = performance.now();
    const response = await fetch(`${url}/api/chat`, {
      method: "POST",
      headers: { ...options.headers, "content-type": "application/json" },
      body,
    });
    headersMs.push(performance.now() - start);
    const reader = response.body!.getReader();
    await reader.read();
    firstByteMs.push(performance.now() - start);
    await reader.cancel();
  }
  return { headers: headersMs, firstByte: firstByteMs };
}

/** Slow streams held open; `close` cancels them all. */
export interface OpenStreams {
  /** Streams that have received their first chunk. */
  readonly flowing: () => number;
  /** Streams that failed to open or broke. */
  readonly failed: () => number;
  close(): Promise<void>;
}

/**
 * Opens `count` streamed chats through `url`, `batch` at a time, and keeps
 * reading them until `close`.
 */
export async function openSlowStreams(
  url: string,
  options: { count: number; batch: number; headers: Record<string, string> },
): Promise<OpenStreams> {
  const abort = new AbortController();
  let flowing = 0;
  let failed = 0;
  const done: Promise<void>[] = [];
  const body = JSON.stringify({
    model: "llama3.2",
    messages: [{ role: "user", content: "slowly" }],
  });
  async function one(): Promise<void> {
    try {
      const response = await fetch(`${url}/api/chat`, {
        method: "POST",
        headers: { ...options.headers, "content-type": "application/json" },
        body,
        signal: abort.signal,
      });
      if (response.status !== 200 || response.body === null) {
        failed++;
        await response.body?.cancel();
        return;
      }
      let first = true;
      for await (const _ of response.body) {
        if (first) flowing++;
        first = false;
      }
    } catch {
      if (!abort.signal.aborted) failed++;
    }
  }
  for (let opened = 0; opened < options.count; opened += options.batch) {
    const size = Math.min(options.batch, options.count - opened);
    for (let i = 0; i < size; i++) done.push(one());
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return {
    flowing: () => flowing,
    failed: () => failed,
    async close() {
      abort.abort();
      await Promise.all(done);
    },
  };
}
