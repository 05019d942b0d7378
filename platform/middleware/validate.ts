/**
 * Request validation derived from the contract: the `(switchyard.options.v1.rules)`
 * field options of each request message, plus two rules every string field
 * obeys (no NUL character; at most 65536 characters unless its rule says
 * otherwise). A violation answers INVALID_ARGUMENT naming the field path, e.g.
 * `user.email: must be an email address`.
 *
 * Each request schema is compiled once into a list of checks; a message type
 * with nothing to check costs one array length test.
 */
import {
  getOption,
  hasOption,
  type DescField,
  type DescMessage,
  type Message,
} from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { rules as rulesExt, StringFormat, type FieldRules } from "../../gen/switchyard/options/v1/options_pb.js";
import type { Middleware } from "../rpc/pipeline.js";

/** Default greatest length of a string field with no `max_len` rule. */
export const DEFAULT_MAX_STRING = 65536;

type Check = (msg: Record<string, unknown>, path: string) => string | undefined;

const cache = new Map<DescMessage, Check[]>();

/** Returns the first rule `message` breaks, as "field.path: reason", or undefined. */
export function findViolation(schema: DescMessage, message: Message): string | undefined {
  return run(checksOf(schema), message as unknown as Record<string, unknown>, "");
}

function run(checks: Check[], msg: Record<string, unknown>, prefix: string): string | undefined {
  for (let i = 0; i < checks.length; i++) {
    const v = checks[i]!(msg, prefix);
    if (v !== undefined) return v;
  }
  return undefined;
}

function checksOf(schema: DescMessage): Check[] {
  let checks = cache.get(schema);
  if (checks === undefined) {
    checks = [];
    cache.set(schema, checks); // set before filling: recursive schemas terminate
    // Well-known types are not ours to rule (Struct values are free-form data).
    if (!schema.typeName.startsWith("google.protobuf.")) {
      for (const field of schema.fields) checks.push(...fieldChecks(field));
    }
  }
  return checks;
}

const emailPattern = /^[^\s@]{1,64}@[^\s@]+\.[^\s@.]+$/;
const idPattern = /^[A-Za-z0-9_-]{1,64}$/;

function fieldChecks(field: DescField): Check[] {
  const r: FieldRules | undefined = hasOption(field, rulesExt) ? getOption(field, rulesExt) : undefined;
  const name = field.name;
  const out: Check[] = [];
  // Oneof members live under the oneof's name as {case, value}; an unselected
  // member reads as undefined and is checked only by `required`.
  const oneof = field.oneof;
  const get: (m: Record<string, unknown>) => unknown = oneof
    ? (m) => {
        const o = m[oneof.localName] as { case: string | undefined; value?: unknown };
        return o.case === field.localName ? o.value : undefined;
      }
    : (m) => m[field.localName];
  const present = (check: Check): Check => (oneof ? (m, p) => (get(m) === undefined ? undefined : check(m, p)) : check);
  const at = (path: string) => (path === "" ? name : `${path}.${name}`);
  // Compiled once per field, not per request.
  const pattern = r?.pattern ? new RegExp(`^(?:${r.pattern})$`) : undefined;
  const stringCheck = (s: string, path: string): string | undefined => {
    if (s.includes("\0")) return `${at(path)}: must not contain a NUL character`;
    const max = r?.maxLen || DEFAULT_MAX_STRING;
    if (s.length > max) return `${at(path)}: must be at most ${max} characters, got ${s.length}`;
    if (r === undefined || s === "") return undefined;
    if (r.minLen && s.length < r.minLen) return `${at(path)}: must be at least ${r.minLen} characters`;
    if (pattern !== undefined && !pattern.test(s)) return `${at(path)}: must match ${r.pattern}`;
    if (r.format === StringFormat.EMAIL && (s.length > 254 || !emailPattern.test(s))) return `${at(path)}: must be an email address`;
    if (r.format === StringFormat.ID && !idPattern.test(s)) return `${at(path)}: must be 1 to 64 letters, digits, "_" or "-"`;
    if (r.format === StringFormat.URL && !isHttpUrl(s)) return `${at(path)}: must be an absolute http or https URL`;
    return undefined;
  };
  const numberCheck = (n: number, path: string): string | undefined => {
    if (r?.hasMin && n < r.min) return `${at(path)}: must be at least ${r.min}`;
    if (r?.hasMax && n > r.max) return `${at(path)}: must be at most ${r.max}`;
    return undefined;
  };

  if (field.fieldKind === "scalar" || field.fieldKind === "enum") {
    const isString = field.fieldKind === "scalar" && field.scalar === 9; // ScalarType.STRING
    const isBytes = field.fieldKind === "scalar" && field.scalar === 12; // ScalarType.BYTES
    if (isString) out.push((m, p) => stringCheck(get(m) as string, p));
    else if (isBytes && r && (r.minLen || r.maxLen)) {
      out.push((m, p) => {
        const len = (get(m) as Uint8Array).length;
        if (r.maxLen && len > r.maxLen) return `${at(p)}: must be at most ${r.maxLen} bytes, got ${len}`;
        if (r.minLen && len > 0 && len < r.minLen) return `${at(p)}: must be at least ${r.minLen} bytes`;
        return undefined;
      });
    } else if (r && (r.hasMin || r.hasMax)) {
      out.push((m, p) => numberCheck(Number(get(m)), p));
    }
    if (r?.required) {
      out.push((m, p) => {
        const v = get(m);
        const empty = v === "" || v === 0 || v === 0n || (v instanceof Uint8Array && v.length === 0) || v === undefined;
        return empty ? `${at(p)}: is required` : undefined;
      });
    }
  } else if (field.fieldKind === "message") {
    const child = field.message;
    if (r?.required) out.push((m, p) => (get(m) === undefined ? `${at(p)}: is required` : undefined));
    out.push((m, p) => {
      const v = get(m) as Record<string, unknown> | undefined;
      return v === undefined ? undefined : run(checksOf(child), v, at(p));
    });
  } else if (field.fieldKind === "list") {
    out.push((m, p) => {
      const items = get(m) as unknown[];
      if (r?.required && items.length === 0) return `${at(p)}: needs at least one item`;
      if (r?.maxItems && items.length > r.maxItems) return `${at(p)}: must have at most ${r.maxItems} items, got ${items.length}`;
      for (let i = 0; i < items.length; i++) {
        const item = items[i];
        const path = `${at(p)}[${i}]`;
        let v: string | undefined;
        if (field.listKind === "message") v = run(checksOf(field.message), item as Record<string, unknown>, path);
        else if (field.listKind === "scalar" && field.scalar === 9) v = stringCheck(item as string, p)?.replace(at(p), path);
        if (v !== undefined) return v;
      }
      return undefined;
    });
  } else if (field.fieldKind === "map") {
    out.push((m, p) => {
      const entries = Object.entries(get(m) as Record<string, unknown>);
      if (r?.required && entries.length === 0) return `${at(p)}: needs at least one entry`;
      if (r?.maxItems && entries.length > r.maxItems) return `${at(p)}: must have at most ${r.maxItems} entries, got ${entries.length}`;
      for (const [k, value] of entries) {
        if (k.includes("\0") || k.length > DEFAULT_MAX_STRING) return `${at(p)}: has an invalid key`;
        if (field.mapKind === "message") {
          const v = run(checksOf(field.message), value as Record<string, unknown>, `${at(p)}["${k}"]`);
          if (v !== undefined) return v;
        } else if (typeof value === "string") {
          const v = stringCheck(value, p);
          if (v !== undefined) return v.replace(at(p), `${at(p)}["${k}"]`);
        }
      }
      return undefined;
    });
  }
  return out.map(present);
}

function isHttpUrl(s: string): boolean {
  try {
    const u = new URL(s);
    return u.protocol === "http:" || u.protocol === "https:";
  } catch {
    return false;
  }
}

/** Creates the validation middleware; a method whose input has nothing to check is left alone. */
export function validate(): Middleware {
  return (method, next) => {
    if (method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming") {
      const schema = method.input;
      return (call) =>
        next({ ...call, input: validatedStream(schema, call.input as AsyncIterable<Message>) });
    }
    const schema = method.input;
    if (checksOf(schema).length === 0) return next;
    return (call) => {
      const violation = findViolation(schema, call.input as Message);
      if (violation !== undefined) throw new ConnectError(violation, Code.InvalidArgument);
      return next(call);
    };
  };
}

async function* validatedStream(schema: DescMessage, input: AsyncIterable<Message>): AsyncIterable<Message> {
  for await (const msg of input) {
    const violation = findViolation(schema, msg);
    if (violation !== undefined) throw new ConnectError(violation, Code.InvalidArgument);
    yield msg;
  }
}
