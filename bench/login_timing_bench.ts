/**
 * Login timing: does `POST /auth/login` take as long for an unknown user as
 * for a known user with a wrong password? Both run the whole login handler
 * (body parsing, throttle, one bcrypt compare, response) in the same
 * process, interleaved so that both see the same machine load. The
 * wrong-password case is the baseline; the table shows each case's median
 * and 90th percentile and the ratio of medians to the baseline.
 *
 *   deno run --no-lock --allow-read --allow-write --allow-env \
 *     bench/login_timing_bench.ts [--cost 10] [--samples 30]
 *
 * The throttle is built with limits high enough that no attempt is refused:
 * the point is the cost of a verification, not the lockout.
 *
 * @module
 */

import { handleLogin } from "../src/auth/login.ts";
import { LoginThrottle } from "../src/auth/login_throttle.ts";
import { hashPassword } from "../src/auth/password.ts";
import { loadPolicy } from "../src/config/load.ts";
import type { Policy } from "../src/config/policy.ts";

const MAX_SAMPLES = 200;
const MAX_SECONDS = 120;

interface Options {
  cost: number;
  samples: number;
}

function parseOptions(args: readonly string[]): Options {
  const options: Options = { cost: 10, samples: 30 };
  for (let i = 0; i < args.length; i++) {
    const value = Number(args[i + 1]);
    if (args[i] === "--cost") options.cost = value;
    else if (args[i] === "--samples") options.samples = value;
    else throw new RangeError(`unknown argument ${JSON.stringify(args[i])}`);
    i++;
  }
  if (!Number.isInteger(options.cost) || options.cost < 4) {
    throw new RangeError(`--cost: ${options.cost} is not an integer >= 4`);
  }
  if (
    !Number.isInteger(options.samples) || options.samples < 1 ||
    options.samples > MAX_SAMPLES
  ) {
    throw new RangeError(
      `--samples: ${options.samples} is not an integer from 1 to ${MAX_SAMPLES}`,
    );
  }
  return options;
}

async function policyWithAlice(password: string, cost: number) {
  const hash = await hashPassword(password, cost);
  const dir = await Deno.makeTempDir({ prefix: "butler-bench-login-" });
  const path = `${dir}/butler.yaml`;
  await Deno.writeTextFile(
    path,
    `
upstream: http://127.0.0.1:11434
auth:
  mode: jwt_standalone
  jwt_secret: bench-secret-0123456789abcdefghijkl
users:
  - name: alice
    password_hash: "${hash}"
    allow_models: ["*"]
`,
  );
  try {
    return await loadPolicy(path);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Milliseconds one login takes, checking it answered `status`. */
async function timeLogin(
  policy: Policy,
  options: { username: string; password: string; status: number },
): Promise<number> {
  // A fresh throttle each time: only the verification is measured.
  const throttle = new LoginThrottle({ maxConcurrentVerifications: 1 });
  const request = new Request("http://127.0.0.1/auth/login", {
    method: "POST",
    body: JSON.stringify({
      username: options.username,
      password: options.password,
    }),
  });
  const start = performance.now();
  const response = await handleLogin(request, {
    policy,
    throttle,
    clientAddress: "127.0.0.1",
  });
  await response.arrayBuffer();
  const elapsed = performance.now() - start;
  if (response.status !== options.status) {
    throw new Error(
      `${options.username}: answered ${response.status}, ` +
        `expected ${options.status}`,
    );
  }
  return elapsed;
}

function percentile(sorted: readonly number[], fraction: number): number {
  const index = Math.min(
    sorted.length - 1,
    Math.ceil(fraction * sorted.length) - 1,
  );
  return sorted[Math.max(0, index)];
}

async function main(): Promise<void> {
  const options = parseOptions(Deno.args);
  const password = "correct horse battery staple";
  const policy = await policyWithAlice(password, options.cost);

  const cases = [
    { name: "wrong password (baseline)", username: "alice", status: 401 },
    { name: "unknown user", username: "mallory", status: 401 },
    { name: "right password", username: "alice", status: 200 },
  ];
  const times: number[][] = cases.map(() => []);
  const deadline = Date.now() + MAX_SECONDS * 1000;

  // One warm-up round, then interleaved samples.
  for (const item of cases) {
    await timeLogin(policy, {
      username: item.username,
      password: item.status === 200 ? password : "wrong",
      status: item.status,
    });
  }
  for (let round = 0; round < options.samples; round++) {
    if (Date.now() > deadline) break;
    for (const [index, item] of cases.entries()) {
      times[index].push(
        await timeLogin(policy, {
          username: item.username,
          password: item.status === 200 ? password : `wrong-${round}`,
          status: item.status,
        }),
      );
    }
  }

  const medians = times.map((list) =>
    percentile([...list].sort((a, b) => a - b), 0.5)
  );
  console.log(
    `login timing, bcrypt cost ${options.cost}, ${
      times[0].length
    } samples per case, Deno ${Deno.version.deno}`,
  );
  console.log(
    "case                       median ms   p90 ms   vs baseline",
  );
  for (const [index, item] of cases.entries()) {
    const sorted = [...times[index]].sort((a, b) => a - b);
    console.log(
      `${item.name.padEnd(26)} ${medians[index].toFixed(1).padStart(9)} ${
        percentile(sorted, 0.9).toFixed(1).padStart(8)
      } ${(medians[index] / medians[0]).toFixed(2).padStart(12)}`,
    );
  }
}

if (import.meta.main) {
  await main();
}
