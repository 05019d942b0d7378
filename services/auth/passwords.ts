/**
 * Password hashing: argon2id through @node-rs/argon2, at OWASP's parameters or
 * stronger. A stored hash made with weaker parameters (or another variant)
 * is reported by `needsRehash`, so Login can upgrade it once the password is
 * known to be right.
 */
import { hash, parseOptions, verify, type Algorithm, type Options } from "@node-rs/argon2";
import { randomBytes } from "node:crypto";
import { RegisterRequestSchema } from "../../gen/switchyard/auth/v1/auth_pb.js";
import { rulesOf } from "../../platform/middleware/validate.js";

/** The longest password accepted, in characters: the contract's max_len of RegisterRequest.password, read from auth.proto. */
export const MAX_PASSWORD_CHARS = contractMaxLen();

function contractMaxLen(): number {
  const max = rulesOf(RegisterRequestSchema.field.password!)?.maxLen;
  if (!max) throw new Error("auth.proto gives RegisterRequest.password no max_len rule: the hasher needs one");
  return max;
}
/** OWASP's minimum for argon2id: 19 MiB, 2 passes, 1 lane. */
export const OWASP_ARGON2 = { memoryKiB: 19456, timeCost: 2 } as const;

// @node-rs/argon2 declares Algorithm as an ambient const enum, which isolated
// modules cannot read; 2 is its Argon2id.
const argon2id = 2 as Algorithm;

/** The parameters new hashes are made with; never below OWASP_ARGON2. */
export interface PasswordPolicy {
  readonly memoryKiB: number;
  readonly timeCost: number;
}

/** Hashes and checks passwords. */
export interface PasswordHasher {
  readonly policy: PasswordPolicy;
  /** The PHC string of `password`; throws RangeError for a password over MAX_PASSWORD_CHARS. */
  hash(password: string): Promise<string>;
  /**
   * Whether `password` matches `stored`. With `stored` undefined (no such user)
   * it checks against a dummy hash made with the same parameters and returns
   * false, so an unknown user costs the same time as a wrong password.
   */
  verify(stored: string | undefined, password: string): Promise<boolean>;
  /** Whether `stored` was made with another variant or weaker parameters than the policy. */
  needsRehash(stored: string): boolean;
}

function refuseLong(password: string): void {
  // Checked before any hashing, so a megabyte "password" costs nothing; the
  // request validation refuses it too, this guards every other caller.
  if (password.length > MAX_PASSWORD_CHARS) throw new RangeError(`password longer than ${MAX_PASSWORD_CHARS} characters`);
}

/**
 * Creates a hasher. Throws RangeError if `policy` is below OWASP's minimum,
 * so a misconfiguration cannot weaken stored hashes.
 */
export async function createPasswordHasher(policy: PasswordPolicy = OWASP_ARGON2): Promise<PasswordHasher> {
  if (policy.memoryKiB < OWASP_ARGON2.memoryKiB || policy.timeCost < OWASP_ARGON2.timeCost) {
    throw new RangeError(`argon2id parameters below OWASP's minimum (m=${OWASP_ARGON2.memoryKiB} KiB, t=${OWASP_ARGON2.timeCost})`);
  }
  const options: Options = { algorithm: argon2id, memoryCost: policy.memoryKiB, timeCost: policy.timeCost, parallelism: 1 };
  const dummy = await hash(randomBytes(32).toString("base64url"), options);
  return {
    policy,
    async hash(password) {
      refuseLong(password);
      return hash(password, options);
    },
    async verify(stored, password) {
      refuseLong(password);
      if (stored === undefined) {
        await verify(dummy, password).catch(() => false);
        return false;
      }
      try {
        return await verify(stored, password);
      } catch {
        return false; // a malformed stored hash never signs anyone in
      }
    },
    needsRehash(stored) {
      try {
        const p = parseOptions(stored);
        return p.algorithm !== argon2id || p.memoryCost < policy.memoryKiB || p.timeCost < policy.timeCost || p.parallelism !== 1;
      } catch {
        return true;
      }
    },
  };
}
