/**
 * Counters, gauges and histograms rendered in the Prometheus text exposition
 * format, version 0.0.4, and the set of metrics Butler exports.
 *
 * Cardinality is bounded by the callers (label values come from the config
 * and from resolved model names), and again here: each metric holds at most
 * `maxSeriesPerMetric` series. A new series beyond that is folded into one
 * series whose label values are all `other`, and
 * `butler_metrics_series_dropped_total{metric}` counts each fold.
 *
 * @module
 */

/** The `Content-Type` of {@linkcode Registry.render}'s output. */
export const PROMETHEUS_CONTENT_TYPE =
  "text/plain; version=0.0.4; charset=utf-8";

/** The label value a series beyond the cap is folded into. */
export const OVERFLOW_LABEL_VALUE = "other";

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

type Labels = Readonly<Record<string, string>>;

// Exactly the keys `Object.keys` lists: own and enumerable.
const isOwnEnumerable = Object.prototype.propertyIsEnumerable;

/** Called when a metric folds a new series into the overflow series. */
type OnOverflow = (metric: string) => void;

/** What every metric kind shares: its name, labels and series table. */
abstract class Metric<Series> {
  readonly name: string;
  readonly help: string;
  readonly labelNames: readonly string[];
  readonly #series = new Map<string, { values: string[]; series: Series }>();
  readonly #maxSeries: number;
  readonly #onOverflow: OnOverflow;

  constructor(
    name: string,
    help: string,
    labelNames: readonly string[],
    limits: { maxSeries: number; onOverflow: OnOverflow },
  ) {
    validateMetricName(name);
    validateLabelNames(name, labelNames);
    this.name = name;
    this.help = help;
    this.labelNames = Object.freeze([...labelNames]);
    this.#maxSeries = limits.maxSeries;
    this.#onOverflow = limits.onOverflow;
  }

  abstract readonly type: "counter" | "gauge" | "histogram";

  protected abstract newSeries(): Series;

  /** Renders this metric's sample lines (without HELP and TYPE). */
  abstract renderSamples(out: string[]): void;

  /** The series for `labels`, created on first use. */
  protected seriesFor(labels: Labels): Series {
    const values = this.#labelValues(labels);
    const key = JSON.stringify(values);
    const found = this.#series.get(key);
    if (found) return found.series;

    if (this.#series.size >= this.#maxSeries) {
      return this.#overflowSeries();
    }
    const series = this.newSeries();
    this.#series.set(key, { values, series });
    return series;
  }

  /** Each series with its label values, in creation order. */
  protected entries(): Iterable<{ values: string[]; series: Series }> {
    return this.#series.values();
  }

  #overflowSeries(): Series {
    this.#onOverflow(this.name);
    const values = this.labelNames.map(() => OVERFLOW_LABEL_VALUE);
    const key = JSON.stringify(values);
    let entry = this.#series.get(key);
    if (!entry) {
      // The one series allowed past the cap: it absorbs all the others.
      entry = { values, series: this.newSeries() };
      this.#series.set(key, entry);
    }
    return entry.series;
  }

  #labelValues(labels: Labels): string[] {
    // One pass over the label names (this runs several times per request);
    // the unknown-name check scans only when `labels` has more keys than
    // the names it matched.
    const values = new Array<string>(this.labelNames.length);
    let matched = 0;
    for (let i = 0; i < this.labelNames.length; i++) {
      const name = this.labelNames[i];
      if (isOwnEnumerable.call(labels, name)) matched++;
      values[i] = String(labels[name] ?? "");
    }
    if (Object.keys(labels).length !== matched) {
      for (const name of Object.keys(labels)) {
        if (!this.labelNames.includes(name)) {
          throw new RangeError(
            `metric ${this.name}: label "${name}" is not one of its labels ` +
              `(${this.labelNames.join(", ") || "none"})`,
          );
        }
      }
    }
    return values;
  }
}

/** Series limits a {@linkcode Registry} hands to each metric it creates. */
interface MetricLimits {
  maxSeries: number;
  onOverflow: OnOverflow;
}

/** A value that only goes up, such as a number of requests. */
export class Counter extends Metric<{ value: number }> {
  readonly type = "counter";

  /** Adds `value` (default 1, must be finite and not negative). */
  inc(labels: Labels, value = 1): void {
    if (!Number.isFinite(value) || value < 0) {
      throw new RangeError(
        `metric ${this.name}: inc(${value}) is not allowed; a counter only ` +
          `grows by a finite amount >= 0`,
      );
    }
    this.seriesFor(labels).value += value;
  }

  protected newSeries(): { value: number } {
    return { value: 0 };
  }

  renderSamples(out: string[]): void {
    for (const { values, series } of this.entries()) {
      out.push(sampleLine(this.name, this.labelNames, values, series.value));
    }
  }
}

/** A value that goes up and down, such as requests in flight. */
export class Gauge extends Metric<{ value: number }> {
  readonly type = "gauge";

  /** Sets the value. */
  set(labels: Labels, value: number): void {
    this.seriesFor(labels).value = value;
  }

  /** Adds `value` (default 1). */
  inc(labels: Labels, value = 1): void {
    this.seriesFor(labels).value += value;
  }

  /** Subtracts `value` (default 1). */
  dec(labels: Labels, value = 1): void {
    this.seriesFor(labels).value -= value;
  }

  protected newSeries(): { value: number } {
    return { value: 0 };
  }

  renderSamples(out: string[]): void {
    for (const { values, series } of this.entries()) {
      out.push(sampleLine(this.name, this.labelNames, values, series.value));
    }
  }
}

interface HistogramSeries {
  /** Observations per bucket (not cumulative); the last is `+Inf`. */
  counts: number[];
  sum: number;
  count: number;
}

/**
 * Observations counted into buckets, such as request durations. Renders the
 * cumulative `_bucket{le=…}` series, `_sum` and `_count`.
 */
export class Histogram extends Metric<HistogramSeries> {
  readonly type = "histogram";
  /** Upper bounds, ascending, without `+Inf`. */
  readonly buckets: readonly number[];

  constructor(
    name: string,
    help: string,
    labelNames: readonly string[],
    options: MetricLimits & { buckets: readonly number[] },
  ) {
    super(name, help, labelNames, options);
    if (labelNames.includes("le")) {
      throw new RangeError(
        `metric ${name}: label "le" is reserved for histogram buckets`,
      );
    }
    this.buckets = Object.freeze(validateBuckets(name, options.buckets));
  }

  /** Records one observation (NaN is ignored). */
  observe(labels: Labels, value: number): void {
    if (Number.isNaN(value)) return;
    const series = this.seriesFor(labels);
    let index = this.buckets.findIndex((bound) => value <= bound);
    if (index === -1) index = this.buckets.length;
    series.counts[index]++;
    series.sum += value;
    series.count++;
  }

  protected newSeries(): HistogramSeries {
    return {
      counts: new Array(this.buckets.length + 1).fill(0),
      sum: 0,
      count: 0,
    };
  }

  renderSamples(out: string[]): void {
    const bucketLabels = [...this.labelNames, "le"];
    for (const { values, series } of this.entries()) {
      let cumulative = 0;
      for (let i = 0; i < this.buckets.length; i++) {
        cumulative += series.counts[i];
        out.push(
          sampleLine(
            `${this.name}_bucket`,
            bucketLabels,
            [...values, formatNumber(this.buckets[i])],
            cumulative,
          ),
        );
      }
      out.push(
        sampleLine(
          `${this.name}_bucket`,
          bucketLabels,
          [...values, "+Inf"],
          series.count,
        ),
      );
      out.push(
        sampleLine(`${this.name}_sum`, this.labelNames, values, series.sum),
      );
      out.push(
        sampleLine(`${this.name}_count`, this.labelNames, values, series.count),
      );
    }
  }
}

/** Options for {@linkcode Registry}. */
export interface RegistryOptions {
  /** Series per metric before new ones are folded into `other`. 10 000. */
  maxSeriesPerMetric?: number;
}

type AnyMetric = Counter | Gauge | Histogram;

const SERIES_DROPPED = "butler_metrics_series_dropped_total";

/**
 * Holds metrics and renders them all, in registration order.
 *
 * @example
 * ```ts
 * const registry = new Registry();
 * const requests = registry.counter("app_requests_total", "Requests.", ["route"]);
 * requests.inc({ route: "/api/chat" });
 * registry.render(); // "# HELP app_requests_total Requests.\n# TYPE …"
 * ```
 */
export class Registry {
  readonly #metrics = new Map<string, AnyMetric>();
  readonly #limits: MetricLimits;
  readonly #seriesDropped: Counter;

  constructor(options: RegistryOptions = {}) {
    const maxSeries = options.maxSeriesPerMetric ?? 10_000;
    if (!Number.isInteger(maxSeries) || maxSeries < 1) {
      throw new RangeError(
        `maxSeriesPerMetric: ${maxSeries} is not allowed; use an integer >= 1`,
      );
    }
    this.#limits = {
      maxSeries,
      onOverflow: (metric) => {
        // The drop counter folding into itself must not count (or recurse).
        if (metric !== SERIES_DROPPED) this.#seriesDropped.inc({ metric });
      },
    };
    this.#seriesDropped = this.counter(
      SERIES_DROPPED,
      'New series folded into the label value "other" because their ' +
        "metric reached its series limit.",
      ["metric"],
    );
  }

  /** Creates and registers a counter. */
  counter(name: string, help: string, labelNames: string[]): Counter {
    return this.#add(new Counter(name, help, labelNames, this.#limits));
  }

  /** Creates and registers a gauge. */
  gauge(name: string, help: string, labelNames: string[]): Gauge {
    return this.#add(new Gauge(name, help, labelNames, this.#limits));
  }

  /** Creates and registers a histogram with the given bucket upper bounds. */
  histogram(
    name: string,
    help: string,
    labelNames: string[],
    buckets: number[],
  ): Histogram {
    return this.#add(
      new Histogram(name, help, labelNames, { ...this.#limits, buckets }),
    );
  }

  /** Every metric in the text exposition format, ending with a newline. */
  render(): string {
    const out: string[] = [];
    for (const metric of this.#metrics.values()) {
      out.push(`# HELP ${metric.name} ${escapeHelp(metric.help)}`);
      out.push(`# TYPE ${metric.name} ${metric.type}`);
      metric.renderSamples(out);
    }
    return out.join("\n") + "\n";
  }

  #add<M extends AnyMetric>(metric: M): M {
    if (this.#metrics.has(metric.name)) {
      throw new RangeError(
        `metric ${metric.name}: already registered; names must be unique`,
      );
    }
    this.#metrics.set(metric.name, metric);
    return metric;
  }
}

/** Butler's metrics, each named `butler_…`. */
export interface ButlerMetrics {
  /** `butler_requests_total{client,user,auth,model,route,status}` */
  readonly requests: Counter;
  /** `butler_refusals_total{client,user,auth,reason}` */
  readonly refusals: Counter;
  /** `butler_request_duration_seconds{route}`: until the last byte. */
  readonly requestDuration: Histogram;
  /** `butler_time_to_first_byte_seconds{route}` */
  readonly timeToFirstByte: Histogram;
  /**
   * `butler_tokens_total{client,user,auth,model,kind}`, kind `prompt` or
   * `generated`.
   */
  readonly tokens: Counter;
  /** `butler_in_flight_requests{client}` */
  readonly inFlightRequests: Gauge;
  /** `butler_in_flight_streams{client}` */
  readonly inFlightStreams: Gauge;
  /** `butler_upstream_up`: 1 when Ollama answered the last probe, else 0. */
  readonly upstreamUp: Gauge;
  /** `butler_upstream_broken_total{route}`: answers broken off mid-body. */
  readonly upstreamBroken: Counter;
  /** `butler_config_reloads_total{result}`, result `success` or `failure`. */
  readonly configReloads: Counter;
  /** `butler_build_info{version,deno}`: set to 1 by the caller at start. */
  readonly buildInfo: Gauge;
}

/**
 * Durations of requests to an LLM: from a cached short answer (milliseconds)
 * to a model load followed by a long generation (minutes).
 */
export const DURATION_BUCKETS_SECONDS: readonly number[] = Object.freeze([
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
  60,
  120,
  300,
  600,
]);

/**
 * Registers Butler's metrics in `registry`.
 *
 * @example
 * ```ts
 * const metrics = butlerMetrics(new Registry());
 * metrics.buildInfo.set({ version: "1.0.0", deno: Deno.version.deno }, 1);
 * metrics.tokens.inc({ client: "ci", model: "llama3.2:1b", kind: "generated" }, 42);
 * ```
 */
export function butlerMetrics(registry: Registry): ButlerMetrics {
  return {
    requests: registry.counter(
      "butler_requests_total",
      "Requests answered, by client, user, how the caller authenticated " +
        "(api_key, jwt, oidc), resolved model, route and HTTP status.",
      ["client", "user", "auth", "model", "route", "status"],
    ),
    refusals: registry.counter(
      "butler_refusals_total",
      "Requests refused by Butler, by client, user, how the caller " +
        "authenticated and reason code (user and auth are - before " +
        "authentication succeeds).",
      ["client", "user", "auth", "reason"],
    ),
    requestDuration: registry.histogram(
      "butler_request_duration_seconds",
      "Time from the request's arrival to the last byte of its response.",
      ["route"],
      [...DURATION_BUCKETS_SECONDS],
    ),
    timeToFirstByte: registry.histogram(
      "butler_time_to_first_byte_seconds",
      "Time from the request's arrival to Ollama's response headers.",
      ["route"],
      [...DURATION_BUCKETS_SECONDS],
    ),
    tokens: registry.counter(
      "butler_tokens_total",
      "Tokens reported by Ollama (or counted from streamed chunks when the " +
        "client left early), by client, user, auth, model and kind " +
        "(prompt, generated).",
      ["client", "user", "auth", "model", "kind"],
    ),
    inFlightRequests: registry.gauge(
      "butler_in_flight_requests",
      "Requests being handled, by client.",
      ["client"],
    ),
    inFlightStreams: registry.gauge(
      "butler_in_flight_streams",
      "Responses being streamed to clients, by client.",
      ["client"],
    ),
    upstreamUp: registry.gauge(
      "butler_upstream_up",
      "1 when the upstream Ollama server is reachable, 0 when it is not.",
      [],
    ),
    upstreamBroken: registry.counter(
      "butler_upstream_broken_total",
      "Answers the upstream broke off after its headers (connection lost " +
        "mid-body), by route.",
      ["route"],
    ),
    configReloads: registry.counter(
      "butler_config_reloads_total",
      "Configuration reloads, by result (success, failure).",
      ["result"],
    ),
    buildInfo: registry.gauge(
      "butler_build_info",
      "Always 1; labels give Butler's version and the Deno version.",
      ["version", "deno"],
    ),
  };
}

function validateMetricName(name: string): void {
  if (!METRIC_NAME.test(name)) {
    throw new RangeError(
      `metric name "${name}" is not valid: use [a-zA-Z_:][a-zA-Z0-9_:]*`,
    );
  }
}

function validateLabelNames(metric: string, labelNames: readonly string[]) {
  const seen = new Set<string>();
  for (const label of labelNames) {
    if (!LABEL_NAME.test(label) || label.startsWith("__")) {
      throw new RangeError(
        `metric ${metric}: label name "${label}" is not valid: use ` +
          `[a-zA-Z_][a-zA-Z0-9_]* not starting with "__"`,
      );
    }
    if (seen.has(label)) {
      throw new RangeError(
        `metric ${metric}: label name "${label}" is listed twice`,
      );
    }
    seen.add(label);
  }
}

function validateBuckets(metric: string, buckets: readonly number[]): number[] {
  if (buckets.length === 0) {
    throw new RangeError(
      `metric ${metric}: buckets is empty; give at least one`,
    );
  }
  for (let i = 0; i < buckets.length; i++) {
    const bound = buckets[i];
    if (!Number.isFinite(bound)) {
      throw new RangeError(
        `metric ${metric}: buckets[${i}] is ${bound}; bounds must be finite ` +
          `(+Inf is added automatically)`,
      );
    }
    if (i > 0 && bound <= buckets[i - 1]) {
      throw new RangeError(
        `metric ${metric}: buckets[${i}] is ${bound}; bounds must be ` +
          `strictly increasing (previous ${buckets[i - 1]})`,
      );
    }
  }
  return [...buckets];
}

function sampleLine(
  name: string,
  labelNames: readonly string[],
  values: readonly string[],
  value: number,
): string {
  if (labelNames.length === 0) return `${name} ${formatNumber(value)}`;
  const pairs = labelNames.map((label, i) =>
    `${label}="${escapeLabelValue(values[i])}"`
  );
  return `${name}{${pairs.join(",")}} ${formatNumber(value)}`;
}

/** Label values escape backslash, double quote and line feed. */
function escapeLabelValue(value: string): string {
  return value.replace(/[\\"\n]/g, (c) => c === "\n" ? "\\n" : `\\${c}`);
}

/** HELP text escapes backslash and line feed. */
function escapeHelp(help: string): string {
  return help.replace(/[\\\n]/g, (c) => c === "\n" ? "\\n" : "\\\\");
}

function formatNumber(value: number): string {
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}
