/**
 * The value Butler writes into `X-Butler-Client` and `X-Butler-User`.
 *
 * A username is not always a valid header value: config users may be named
 * in any script, and an OIDC username comes from a token claim, text the
 * person (or their provider) chose. Written as it is, a name outside
 * Latin-1 (`李雷`) or with control characters makes `Headers.set` throw, so
 * every request for that person would fail; leading and trailing spaces are
 * silently trimmed; Latin-1 letters (`ålice`) leave as raw bytes that are
 * not UTF-8.
 *
 * So the value is percent-encoded as in RFC 3986: every UTF-8 byte outside
 * the unreserved characters and the sub-delimiters, `:` and `@` is written
 * `%XX` (upper-case hex), `%` and the space included. The result is always
 * printable ASCII, two different names give different values (a lone
 * surrogate, which has no UTF-8 form, is sent as U+FFFD), and
 * `decodeURIComponent` gives the name back. A name made only of the allowed
 * characters, as most are, is sent unchanged; one with other ASCII such as
 * `\` or `/` (`CORP\jdoe`) now arrives encoded (`CORP%5Cjdoe`).
 *
 * @module
 */

// RFC 3986 §2.3 unreserved, §2.2 sub-delims, and ":" / "@" (pchar).
const PLAIN = /^[A-Za-z0-9\-._~!$&'()*+,;=:@]*$/;

// Byte -> whether it is sent as it is; indexed by the byte's value.
const PLAIN_BYTE = new Uint8Array(256);
for (let byte = 0; byte < 128; byte++) {
  if (PLAIN.test(String.fromCharCode(byte))) PLAIN_BYTE[byte] = 1;
}

const HEX = "0123456789ABCDEF";
const encoder = new TextEncoder();

/**
 * `name` percent-encoded for an identity header (see the module comment).
 * Lone surrogates, which have no UTF-8 form, are sent as U+FFFD.
 */
export function encodeIdentityHeader(name: string): string {
  if (PLAIN.test(name)) return name;
  let out = "";
  for (const byte of encoder.encode(name)) {
    out += PLAIN_BYTE[byte] === 1
      ? String.fromCharCode(byte)
      : "%" + HEX[byte >> 4] + HEX[byte & 15];
  }
  return out;
}
