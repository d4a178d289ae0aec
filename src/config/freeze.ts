/**
 * Making the compiled policy immutable: plain objects and arrays are frozen,
 * maps and URLs are replaced by read-only versions, because `Object.freeze`
 * alone leaves `Map#set` and `URL` setters working.
 *
 * @module
 */

/** A `Map` whose contents are fixed at construction. */
class ReadonlyMapView<K, V> extends Map<K, V> {
  #sealed = false;

  constructor(entries: Iterable<readonly [K, V]>) {
    super();
    for (const [key, value] of entries) super.set(key, value);
    this.#sealed = true;
  }

  override set(key: K, value: V): this {
    if (this.#sealed) throw new TypeError("the policy is read-only");
    return super.set(key, value);
  }

  override delete(_key: K): boolean {
    throw new TypeError("the policy is read-only");
  }

  override clear(): void {
    throw new TypeError("the policy is read-only");
  }
}

function readOnly(): never {
  throw new TypeError("the policy is read-only");
}

/** A `URL` whose setters throw. */
class ReadonlyURL extends URL {
  override get href(): string {
    return super.href;
  }
  override set href(_value: string) {
    readOnly();
  }
  override get protocol(): string {
    return super.protocol;
  }
  override set protocol(_value: string) {
    readOnly();
  }
  override get username(): string {
    return super.username;
  }
  override set username(_value: string) {
    readOnly();
  }
  override get password(): string {
    return super.password;
  }
  override set password(_value: string) {
    readOnly();
  }
  override get host(): string {
    return super.host;
  }
  override set host(_value: string) {
    readOnly();
  }
  override get hostname(): string {
    return super.hostname;
  }
  override set hostname(_value: string) {
    readOnly();
  }
  override get port(): string {
    return super.port;
  }
  override set port(_value: string) {
    readOnly();
  }
  override get pathname(): string {
    return super.pathname;
  }
  override set pathname(_value: string) {
    readOnly();
  }
  override get search(): string {
    return super.search;
  }
  override set search(_value: string) {
    readOnly();
  }
  override get hash(): string {
    return super.hash;
  }
  override set hash(_value: string) {
    readOnly();
  }
  /** A copy: changing it does not change this URL. */
  override get searchParams(): URLSearchParams {
    return new URLSearchParams(super.search);
  }
}

/**
 * Freezes `value` and everything reachable from it, replacing maps and URLs
 * with read-only versions. Byte arrays cannot be frozen; the policy exposes
 * them through getters that return a copy instead.
 */
export function deepFreeze<T>(value: T): T {
  if (typeof value !== "object" || value === null) return value;
  if (ArrayBuffer.isView(value) || Object.isFrozen(value)) return value;

  if (value instanceof URL) {
    return Object.freeze(new ReadonlyURL(value.href)) as T;
  }
  if (value instanceof Map) {
    const entries = [...value].map(([key, item]) =>
      [key, deepFreeze(item)] as const
    );
    return Object.freeze(new ReadonlyMapView(entries)) as T;
  }

  const record = value as Record<PropertyKey, unknown>;
  for (const key of Reflect.ownKeys(record)) {
    const descriptor = Object.getOwnPropertyDescriptor(record, key);
    if (descriptor === undefined || !("value" in descriptor)) continue;
    record[key] = deepFreeze(descriptor.value);
  }
  return Object.freeze(value);
}
