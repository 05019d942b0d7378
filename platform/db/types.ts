/**
 * The database as a service sees it. One `postgres` pool per process; each
 * service keeps its tables in its own schema (e.g. `<service>.users`)
 * and names them schema-qualified. Statements go through the tagged template
 * only: never `sql.unsafe` with input.
 */
import type { Sql, TransactionSql } from "postgres";

export type { Sql, TransactionSql };

/** The process's database access. */
export interface Database {
  /** The pool. */
  readonly sql: Sql;
  /**
   * Runs `fn` in a transaction. Connection loss and PostgreSQL being down
   * surface as ConnectError UNAVAILABLE, so RPCs answer UNAVAILABLE rather
   * than INTERNAL while the database restarts.
   */
  tx<T>(fn: (tx: TransactionSql) => Promise<T>): Promise<T>;
  /** Whether the server answers and accepts writes (false on a standby not yet promoted). */
  ping(): Promise<boolean>;
  /** Closes the pool. */
  close(): Promise<void>;
}
