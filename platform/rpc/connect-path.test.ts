/** The Connect GET query check, alone. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { badGetMessage } from "./connect-path.js";

test("a base64=1 message that is not base64 is named; good ones and plain ones pass", () => {
  assert.match(badGetMessage("/s/M?connect=v1&encoding=proto&base64=1&message=!!!!") ?? "", /^message: is not base64/);
  assert.match(badGetMessage("/s/M?connect=v1&encoding=proto&base64=1&message=A") ?? "", /^message: is not base64/);
  assert.equal(badGetMessage("/s/M?connect=v1&encoding=proto&base64=1&message=CgVoZWxsbw"), undefined);
  assert.equal(badGetMessage("/s/M?connect=v1&encoding=proto&base64=1&message=CgVoZWxsbw%3D%3D"), undefined);
  assert.equal(badGetMessage("/s/M?connect=v1&encoding=proto&base64=1"), undefined);
  assert.equal(badGetMessage("/s/M?connect=v1&encoding=json&message=!!!!"), undefined);
  assert.equal(badGetMessage("/s/M"), undefined);
});
