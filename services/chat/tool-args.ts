/**
 * Checks the arguments a model gave a tool call before anything runs:
 * valid JSON, an object, fitting the tool's JSON Schema (ajv). A failure is
 * told to the model as a tool error; it never reaches a device.
 */
import type { JsonObject } from "@bufbuild/protobuf";
import { Ajv, type ValidateFunction } from "ajv";

/** Checked arguments, or why they were refused (for the model). */
export type CheckedArguments = { readonly ok: true; readonly args: JsonObject } | { readonly ok: false; readonly error: string };

const ajv = new Ajv({ strict: false, allErrors: false, validateSchema: true });
const compiled = new Map<string, ValidateFunction | Error>();
const maxCached = 1000;

function validatorOf(schema: Record<string, unknown>): ValidateFunction | Error {
  const key = JSON.stringify(schema);
  let v = compiled.get(key);
  if (v === undefined) {
    try {
      v = ajv.compile(schema);
    } catch (err) {
      v = err instanceof Error ? err : new Error(String(err));
    }
    if (compiled.size >= maxCached) compiled.delete(compiled.keys().next().value!);
    compiled.set(key, v);
  }
  return v;
}

/** Parses `argumentsJson` (empty means `{}`) and checks it against `schema` (empty means any object). */
export function checkToolArguments(argumentsJson: string, schema: Record<string, unknown>): CheckedArguments {
  let parsed: unknown;
  try {
    parsed = argumentsJson.trim() === "" ? {} : JSON.parse(argumentsJson);
  } catch (err) {
    return { ok: false, error: `the arguments are not valid JSON (${(err as Error).message}); send a JSON object` };
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    return { ok: false, error: "the arguments must be a JSON object" };
  }
  if (Object.keys(schema).length === 0) return { ok: true, args: parsed as JsonObject };
  const validate = validatorOf(schema);
  if (validate instanceof Error) return { ok: false, error: `the tool declares an invalid JSON Schema, so it cannot be called: ${validate.message}` };
  if (!validate(parsed)) {
    const why = (validate.errors ?? []).map((e) => `${e.instancePath || "(arguments)"} ${e.message ?? "is invalid"}`).join("; ");
    return { ok: false, error: `the arguments do not fit the tool's schema: ${why}` };
  }
  return { ok: true, args: parsed as JsonObject };
}
