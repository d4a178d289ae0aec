/**
 * An upstream that answers `POST /api/chat` with an Ollama-shaped NDJSON
 * stream whose chunks carry the wall-clock time they were written at, in
 * microseconds, as their content. A client that notes when each chunk
 * arrives gets its one-way latency; any offset between this process's clock
 * and the client's is the same for every path measured, so it cancels in
 * the difference between a proxy and direct.
 *
 *   deno run --allow-net=127.0.0.1 bench/lib/stamp_upstream.ts <port>
 *
 * Query-free: the request body is read and ignored; the stream has
 * `x-chunks` chunks (header, default 50) every `x-interval-ms` ms (default 10).
 *
 * @module
 */

const encoder = new TextEncoder();

/** Microseconds since the epoch, from the high-resolution clock. */
export function nowMicros(): number {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

function line(content: string, done: boolean): Uint8Array {
  const body = done
    ? {
      model: "llama3.2",
      created_at: new Date().toISOString(),
      message: { role: "assistant", content: "" },
      done: true,
      done_reason: "stop",
      prompt_eval_count: 3,
      eval_count: 50,
    }
    : {
      model: "llama3.2",
      created_at: new Date().toISOString(),
      message: { role: "assistant", content },
      done: false,
    };
  return encoder.encode(JSON.stringify(body) + "\n");
}

if (import.meta.main) {
  const port = Number(Deno.args[0]);
  Deno.serve(
    { hostname: "127.0.0.1", port, onListen: () => {} },
    async (req) => {
      await req.body?.cancel();
      const chunks = Number(req.headers.get("x-chunks") ?? 50);
      const interval = Number(req.headers.get("x-interval-ms") ?? 10);
      let sent = 0;
      let timer: ReturnType<typeof setInterval> | undefined;
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          timer = setInterval(() => {
            if (sent === chunks) {
              clearInterval(timer);
              controller.enqueue(line("", true));
              controller.close();
              return;
            }
            sent++;
            controller.enqueue(line(String(nowMicros()), false));
          }, interval);
        },
        cancel() {
          clearInterval(timer);
        },
      });
      return new Response(body, {
        headers: { "content-type": "application/x-ndjson" },
      });
    },
  );
}
