/**
 * The protoc-gen-validate rules in Envoy's protos (`(validate.rules)`,
 * `(validate.required)` on oneofs), which Envoy enforces when it loads a
 * config but `fromJson` does not: required fields and oneofs, string and
 * list lengths, number and duration bounds, defined enums, allowed Any types.
 * Rules this file does not know (regex patterns, well-known string formats)
 * are not checked; Envoy would still check them.
 */
import { getOption, hasOption, type DescExtension, type DescField, type DescMessage, type Message, type Registry } from "@bufbuild/protobuf";
import { reflect, type ReflectMessage } from "@bufbuild/protobuf/reflect";
import { anyUnpack, type Any, type Duration } from "@bufbuild/protobuf/wkt";

type Rules = Record<string, any>; // a validate.*Rules message from the registry

/** getOption/hasOption over descriptors found in a registry (their types are not generated). */
const has = (desc: unknown, ext: DescExtension): boolean => hasOption(desc as never, ext as never);
const get = (desc: unknown, ext: DescExtension): unknown => getOption(desc as never, ext as never);

/** Reads a rules message's set fields as a plain object (unset fields absent, proto2-style). */
function setFields(message: Message, desc: DescMessage): Rules {
  const r = reflect(desc, message);
  const out: Rules = {};
  for (const f of desc.fields) {
    if (!r.isSet(f)) continue;
    const v = r.get(f) as unknown;
    out[f.localName] = f.fieldKind === "message" ? setFields((v as ReflectMessage).message, f.message) : f.fieldKind === "list" ? [...(v as Iterable<unknown>)] : v;
  }
  return out;
}

const wrappers = new Set(["DoubleValue", "FloatValue", "Int64Value", "UInt64Value", "Int32Value", "UInt32Value", "BoolValue", "StringValue", "BytesValue"].map((n) => `google.protobuf.${n}`));

const num = (v: unknown) => (typeof v === "bigint" ? Number(v) : (v as number));
const durationMs = (d: Duration | Rules) => Number(d.seconds ?? 0n) * 1000 + num(d.nanos ?? 0) / 1e6;

/** Problems of one scalar (or duration) value under numeric bound rules. */
function bounds(path: string, value: number, r: Rules, show: (n: number) => string): string[] {
  const p: string[] = [];
  if (r.const !== undefined && value !== num(r.const)) p.push(`${path}: must be ${show(num(r.const))}, got ${show(value)}`);
  if (r.gt !== undefined && !(value > num(r.gt))) p.push(`${path}: must be greater than ${show(num(r.gt))}, got ${show(value)}`);
  if (r.gte !== undefined && !(value >= num(r.gte))) p.push(`${path}: must be at least ${show(num(r.gte))}, got ${show(value)}`);
  if (r.lt !== undefined && !(value < num(r.lt))) p.push(`${path}: must be less than ${show(num(r.lt))}, got ${show(value)}`);
  if (r.lte !== undefined && !(value <= num(r.lte))) p.push(`${path}: must be at most ${show(num(r.lte))}, got ${show(value)}`);
  if (Array.isArray(r.in) && r.in.length > 0 && !r.in.map(num).includes(value)) p.push(`${path}: must be one of ${r.in.map(num).join(", ")}, got ${show(value)}`);
  return p;
}

/** Validates messages against the PGV rules of a registry's descriptors. */
export function createPgvValidator(registry: Registry) {
  const rulesExt = registry.getExtension("validate.rules") as DescExtension | undefined;
  const oneofRequired = registry.getExtension("validate.required") as DescExtension | undefined;
  const ignored = registry.getExtension("validate.ignored") as DescExtension | undefined;
  const disabled = registry.getExtension("validate.disabled") as DescExtension | undefined;
  if (!rulesExt || !oneofRequired) throw new Error("the Envoy schema lacks validate.proto's extensions");
  const requiredOneof: DescExtension = oneofRequired;

  const rulesOf = (field: DescField): Rules | undefined => {
    if (!has(field, rulesExt)) return undefined;
    const m = get(field, rulesExt) as Message;
    return setFields(m, rulesExt.message!);
  };

  /** Problems of one value of `field` (an element, for lists and maps) under `r`. */
  function value(path: string, field: DescField, v: unknown, r: Rules | undefined, messageDesc: DescMessage | undefined): string[] {
    const p: string[] = [];
    const kind = r ? Object.keys(r).find((k) => k !== "message") : undefined;
    const rr = kind ? r![kind] : undefined;
    if (messageDesc) {
      const child = v as ReflectMessage;
      if (wrappers.has(messageDesc.typeName) && rr) {
        const inner = child.get(messageDesc.fields[0]!) as unknown;
        p.push(...scalar(path, inner, kind!, rr));
      } else if (messageDesc.typeName === "google.protobuf.Duration" && kind === "duration") {
        const ms = durationMs(child.message as Duration);
        const lims: Rules = {};
        for (const k of ["const", "gt", "gte", "lt", "lte"]) if (rr[k] !== undefined) lims[k] = durationMs(rr[k]);
        p.push(...bounds(path, ms, lims, (n) => `${n / 1000}s`));
      } else if (messageDesc.typeName === "google.protobuf.Any" && kind === "any" && Array.isArray(rr.in) && rr.in.length > 0) {
        const url = (child.message as Any).typeUrl;
        if (!rr.in.includes(url)) p.push(`${path}: @type must be one of ${rr.in.join(", ")}, got ${url}`);
      }
      if (!r?.message?.skip) p.push(...walk(child, path));
      return p;
    }
    return scalar(path, v, kind, rr, field);
  }

  function scalar(path: string, v: unknown, kind: string | undefined, rr: Rules | undefined, field?: DescField): string[] {
    const p: string[] = [];
    if (field?.fieldKind === "enum" || (field?.fieldKind === "list" && field.listKind === "enum")) {
      const e = field.enum!;
      if (rr?.definedOnly && !e.values.some((x) => x.number === v)) p.push(`${path}: ${v} is not a value of ${e.typeName}`);
      if (rr?.notIn?.includes(v)) p.push(`${path}: ${e.values.find((x) => x.number === v)?.name ?? v} is not allowed`);
      return p;
    }
    if (!kind || !rr) return p;
    if (kind === "string" && typeof v === "string") {
      const chars = [...v].length;
      const bytes = Buffer.byteLength(v);
      if (rr.minLen !== undefined && chars < num(rr.minLen) && !(rr.ignoreEmpty && v === "")) p.push(`${path}: must have at least ${num(rr.minLen)} character(s), got ${JSON.stringify(v)}`);
      if (rr.maxLen !== undefined && chars > num(rr.maxLen)) p.push(`${path}: must have at most ${num(rr.maxLen)} characters`);
      if (rr.minBytes !== undefined && bytes < num(rr.minBytes) && !(rr.ignoreEmpty && v === "")) p.push(`${path}: must have at least ${num(rr.minBytes)} byte(s), got ${JSON.stringify(v)}`);
      if (rr.maxBytes !== undefined && bytes > num(rr.maxBytes)) p.push(`${path}: must have at most ${num(rr.maxBytes)} bytes`);
      if (Array.isArray(rr.in) && rr.in.length > 0 && !rr.in.includes(v)) p.push(`${path}: must be one of ${rr.in.join(", ")}, got ${JSON.stringify(v)}`);
      if (Array.isArray(rr.notIn) && rr.notIn.includes(v)) p.push(`${path}: ${JSON.stringify(v)} is not allowed`);
      return p;
    }
    if (["int32", "int64", "uint32", "uint64", "sint32", "sint64", "fixed32", "fixed64", "sfixed32", "sfixed64", "double", "float"].includes(kind)) {
      return bounds(path, num(v), rr, String);
    }
    return p;
  }

  /** Every rule problem of `m` and what it contains, paths from `path`. */
  function walk(m: ReflectMessage, path: string): string[] {
    const desc = m.desc;
    if (disabled && has(desc, disabled) && get(desc, disabled)) return [];
    if (ignored && has(desc, ignored) && get(desc, ignored)) return [];
    const p: string[] = [];
    const at = (name: string) => (path ? `${path}.${name}` : name);
    for (const o of desc.oneofs) {
      if (has(o, requiredOneof) && get(o, requiredOneof) && !o.fields.some((f) => m.isSet(f))) {
        p.push(`${at(o.name)}: one of ${o.fields.map((f) => f.name).join(", ")} is required`);
      }
    }
    if (desc.typeName === "google.protobuf.Any") {
      const inner = anyUnpack(m.message as Any, registry);
      const innerDesc = inner && registry.getMessage((m.message as Any).typeUrl.slice((m.message as Any).typeUrl.lastIndexOf("/") + 1));
      return inner && innerDesc ? walk(reflect(innerDesc, inner), path) : p;
    }
    for (const f of desc.fields) {
      const r = rulesOf(f);
      const set = m.isSet(f);
      const fp = at(f.name);
      if (!set) {
        // A oneof member's rules apply only when it is the member set.
        if (f.oneof) continue;
        if (r?.message?.required) p.push(`${fp}: is required`);
        else if (r) {
          const kind = Object.keys(r).find((k) => k !== "message");
          if (kind === "repeated" && r.repeated.minItems !== undefined && num(r.repeated.minItems) > 0) p.push(`${fp}: needs at least ${num(r.repeated.minItems)} item(s)`);
          else if (kind === "map" && r.map.minPairs !== undefined && num(r.map.minPairs) > 0) p.push(`${fp}: needs at least ${num(r.map.minPairs)} entr(ies)`);
          else if (kind && ["duration", "any", "timestamp"].includes(kind) && r[kind].required) p.push(`${fp}: is required`);
          else if (f.fieldKind === "scalar" && kind && !f.oneof) p.push(...scalar(fp, f.scalar === 9 ? "" : 0, kind, r[kind]));
          else if (f.fieldKind === "enum" && r.enum) p.push(...scalar(fp, 0, "enum", r.enum, f));
        }
        continue;
      }
      const v = m.get(f) as unknown;
      if (f.fieldKind === "list") {
        const items = [...(v as Iterable<unknown>)];
        const rr = r?.repeated;
        if (rr?.minItems !== undefined && items.length < num(rr.minItems)) p.push(`${fp}: needs at least ${num(rr.minItems)} item(s), got ${items.length}`);
        if (rr?.maxItems !== undefined && items.length > num(rr.maxItems)) p.push(`${fp}: allows at most ${num(rr.maxItems)} item(s), got ${items.length}`);
        if (rr?.unique && new Set(items.map((x) => JSON.stringify(x))).size !== items.length) p.push(`${fp}: items must be unique`);
        items.forEach((item, i) => p.push(...value(`${fp}[${i}]`, f, item, rr?.items, f.listKind === "message" ? f.message : undefined)));
      } else if (f.fieldKind === "map") {
        const entries = [...(v as Map<unknown, unknown>)];
        const rr = r?.map;
        if (rr?.minPairs !== undefined && entries.length < num(rr.minPairs)) p.push(`${fp}: needs at least ${num(rr.minPairs)} entr(ies)`);
        for (const [k, item] of entries) p.push(...value(`${fp}[${String(k)}]`, f, item, rr?.values, f.mapKind === "message" ? f.message : undefined));
      } else {
        p.push(...value(fp, f, v, r, f.fieldKind === "message" ? f.message : undefined));
      }
    }
    return p;
  }

  return {
    /** Every PGV problem of `message` (of type `desc`), each naming its path. */
    check(desc: DescMessage, message: Message): string[] {
      return walk(reflect(desc, message), "");
    },
  };
}
