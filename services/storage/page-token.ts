/**
 * Opaque page tokens: the position after the last item of a page, bound by an
 * HMAC to the query that produced it (the acting user, the caller, the
 * filters). A token altered, made up, or replayed with another query or by
 * another caller is refused with INVALID_ARGUMENT.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { createHmac, timingSafeEqual } from "node:crypto";

/** A position in a newest-first listing. */
export interface Cursor {
  /** create_time as PostgreSQL prints it (microseconds kept). */
  readonly time: string;
  readonly id: string;
}

/** Page tokens signed with `key`. */
export interface PageTokens {
  /** The token of the page after `cursor`, for the query `query`. */
  issue(query: unknown, cursor: Cursor): string;
  /** The cursor in `token`; throws INVALID_ARGUMENT unless it is ours and made for `query`. Undefined for "". */
  read(query: unknown, token: string): Cursor | undefined;
}

/** Creates the page-token codec. */
export function createPageTokens(key: Buffer): PageTokens {
  const mac = (query: unknown, body: string) => createHmac("sha256", key).update(JSON.stringify(query)).update("\0").update(body).digest();
  const refuse = (why: string) => new ConnectError(`page_token: ${why}; list again from the first page (no page_token)`, Code.InvalidArgument);
  return {
    issue(query, cursor) {
      const body = Buffer.from(JSON.stringify([cursor.time, cursor.id])).toString("base64url");
      return `${body}.${mac(query, body).toString("base64url")}`;
    },
    read(query, token) {
      if (token === "") return undefined;
      const [body, tag, extra] = token.split(".");
      if (body === undefined || tag === undefined || extra !== undefined) throw refuse("is not a token this service issued");
      const given = Buffer.from(tag, "base64url");
      const wanted = mac(query, body);
      if (given.length !== wanted.length || !timingSafeEqual(given, wanted)) {
        throw refuse("was issued for another query or another caller, or was altered");
      }
      const [time, id] = JSON.parse(Buffer.from(body, "base64url").toString()) as [string, string];
      return { time, id };
    },
  };
}
