/** The `/metrics` bearer check: scheme in any case, the whole token exactly. */

import assert from "node:assert/strict";
import { metricsAuthorized } from "../src/observe/metrics_auth.ts";

Deno.test("a bearer with spaces in it is matched whole", () => {
  const bearer = "correct horse battery staple";
  assert.equal(metricsAuthorized(`Bearer ${bearer}`, bearer), true);
  assert.equal(metricsAuthorized(`bearer\t${bearer}  `, bearer), true);
  assert.equal(metricsAuthorized("Bearer correct horse", bearer), false);
  assert.equal(metricsAuthorized(`Bearer ${bearer} x`, bearer), false);
});

Deno.test("no token, another scheme or no header is refused", () => {
  const bearer = "metrics-bearer-0123456789";
  for (
    const header of [null, "", "Bearer", "Bearer ", `Basic ${bearer}`, bearer]
  ) {
    assert.equal(metricsAuthorized(header, bearer), false, String(header));
  }
});
