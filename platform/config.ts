/**
 * Configuration from environment variables, checked once at start.
 *
 * Every variable is declared with a parser; `readConfig` parses them all and
 * throws a `ConfigError` that names each bad variable, so a process stops with
 * a message a person can act on instead of failing later with a vague error.
 */

/** A parser of one variable: returns the value or throws a reason. */
export type EnvParser<T> = (raw: string) => T;

/** A variable's declaration: its parser and default (undefined = required). */
export interface EnvVar<T> {
  readonly parse: EnvParser<T>;
  readonly fallback?: T | (() => T);
  /** Whether the value must never be printed (tokens, keys, passwords). */
  readonly secret?: boolean;
  readonly doc: string;
}

/** Thrown by `readConfig`; its message names every bad variable. */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`bad configuration:\n  ${problems.join("\n  ")}`);
    this.name = "ConfigError";
  }
}

/** How documentation shows a variable's default: `required`, `(empty)`, `(computed)`, `(secret)` or the value in backticks. */
export function describeDefault(v: EnvVar<unknown>): string {
  if (v.fallback === undefined) return "required";
  if (typeof v.fallback === "function") {
    const value = (v.fallback as () => unknown)();
    return Array.isArray(value) && value.length === 0 ? "(empty)" : "(computed)";
  }
  if (v.secret) return "(secret)";
  const value = Array.isArray(v.fallback) ? v.fallback.join(",") : String(v.fallback);
  return value === "" ? "(empty)" : `\`${value}\``;
}

/** Declares a variable; see the parsers below. */
export function env<T>(doc: string, parse: EnvParser<T>, fallback?: T | (() => T), secret = false): EnvVar<T> {
  return { doc, parse, fallback, secret };
}

/** Parses an integer within [min, max]. */
export function int(min: number, max: number): EnvParser<number> {
  return (raw) => {
    if (!/^-?\d+$/.test(raw.trim())) throw new Error(`expected a whole number, got "${raw}"`);
    const n = Number(raw);
    if (n < min || n > max) throw new Error(`expected a number from ${min} to ${max}, got ${n}`);
    return n;
  };
}

/** Parses a non-empty string. */
export const str: EnvParser<string> = (raw) => {
  if (raw.trim() === "") throw new Error("must not be empty");
  return raw;
};

/** Parses a URL whose scheme is one of `schemes`. */
export function url(...schemes: string[]): EnvParser<string> {
  return (raw) => {
    let parsed: URL;
    try {
      parsed = new URL(raw);
    } catch {
      throw new Error(`expected a URL (${schemes.join(" or ")}), got "${raw}"`);
    }
    if (!schemes.includes(parsed.protocol.replace(/:$/, ""))) {
      throw new Error(`expected a ${schemes.join(" or ")} URL, got scheme "${parsed.protocol}"`);
    }
    return raw;
  };
}

/** Parses a comma-separated list, each item checked by `item`. */
export function list<T>(item: EnvParser<T>): EnvParser<T[]> {
  return (raw) => raw.split(",").map((s) => s.trim()).filter((s) => s !== "").map(item);
}

/** Parses one of fixed words. */
export function oneOf<const W extends string>(...words: W[]): EnvParser<W> {
  return (raw) => {
    if (!(words as string[]).includes(raw)) throw new Error(`expected one of ${words.join(", ")}, got "${raw}"`);
    return raw as W;
  };
}

/** Parses true/false/1/0. */
export const bool: EnvParser<boolean> = (raw) => {
  if (/^(true|1|yes)$/i.test(raw)) return true;
  if (/^(false|0|no)$/i.test(raw)) return false;
  throw new Error(`expected true or false, got "${raw}"`);
};

type Shape = Record<string, EnvVar<unknown>>;
/** The parsed values of a declaration object. */
export type ConfigOf<S extends Shape> = { [K in keyof S]: S[K] extends EnvVar<infer T> ? T : never };

/**
 * Parses every declared variable from `source` (default `process.env`).
 * Unset or empty variables take their default; a required one with none, or a
 * value its parser refuses, is reported. Secret values are never echoed.
 */
export function readConfig<S extends Shape>(shape: S, source: NodeJS.ProcessEnv = process.env): ConfigOf<S> {
  const out: Record<string, unknown> = {};
  const problems: string[] = [];
  for (const [name, spec] of Object.entries(shape)) {
    const raw = source[name];
    if (raw === undefined || raw === "") {
      if (spec.fallback === undefined) problems.push(`${name} is required: ${spec.doc}`);
      else out[name] = typeof spec.fallback === "function" ? (spec.fallback as () => unknown)() : spec.fallback;
      continue;
    }
    try {
      out[name] = spec.parse(raw);
    } catch (err) {
      const reason = spec.secret ? "invalid value (not shown: secret)" : (err as Error).message;
      problems.push(`${name}: ${reason} (${spec.doc})`);
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return out as ConfigOf<S>;
}
