/**
 * SQLite behind one small interface: `bun:sqlite` under Bun, `better-sqlite3` (12.x, works on
 * Node 20) under Node. Both are synchronous, so a transaction is one uninterrupted stretch of the
 * event loop. Every database is opened in WAL mode with `synchronous = FULL`: a row committed
 * before the server answered is on disk when the process is killed.
 */
import { createRequire } from "node:module";

export type SqlValue = string | number | bigint | null | Uint8Array;
export type Row = Record<string, SqlValue>;

export interface SqlDatabase {
  /** Runs one or more statements without parameters. */
  exec(sql: string): void;
  run(sql: string, ...params: SqlValue[]): { changes: number };
  get<T = Row>(sql: string, ...params: SqlValue[]): T | undefined;
  all<T = Row>(sql: string, ...params: SqlValue[]): T[];
  /** Runs `body` inside BEGIN IMMEDIATE ... COMMIT (ROLLBACK when it throws). */
  transaction<T>(body: () => T): T;
  close(): void;
  readonly driver: "bun:sqlite" | "better-sqlite3";
}

interface Statement {
  run(...params: SqlValue[]): { changes: number };
  get(...params: SqlValue[]): unknown;
  all(...params: SqlValue[]): unknown[];
}

interface NativeDatabase {
  exec(sql: string): void;
  prepare(sql: string): Statement;
  close(): void;
}

const require = createRequire(import.meta.url);

function openNative(path: string): { db: NativeDatabase; driver: SqlDatabase["driver"] } {
  if (typeof (globalThis as { Bun?: unknown }).Bun !== "undefined") {
    // Resolved at run time so that Node never sees the specifier; vitest under Bun hands the
    // require through to Bun's own loader.
    const { Database } = require("bun:sqlite") as { Database: new (path: string) => NativeDatabase };
    return { db: new Database(path), driver: "bun:sqlite" };
  }
  const Database = require("better-sqlite3") as new (path: string) => NativeDatabase;
  return { db: new Database(path), driver: "better-sqlite3" };
}

/** Opens (creating if needed) the database file at `path` in WAL mode. */
export function openDatabase(path: string): SqlDatabase {
  const { db, driver } = openNative(path);
  const cache = new Map<string, Statement>();
  const statement = (sql: string): Statement => {
    let prepared = cache.get(sql);
    if (!prepared) {
      prepared = db.prepare(sql);
      cache.set(sql, prepared);
    }
    return prepared;
  };
  db.exec("PRAGMA journal_mode = WAL");
  db.exec("PRAGMA synchronous = FULL");
  db.exec("PRAGMA busy_timeout = 5000");
  db.exec("PRAGMA foreign_keys = ON");
  let depth = 0;
  return {
    driver,
    exec: (sql) => db.exec(sql),
    run: (sql, ...params) => {
      const result = statement(sql).run(...params);
      return { changes: Number(result.changes) };
    },
    get: <T>(sql: string, ...params: SqlValue[]) =>
      (statement(sql).get(...params) ?? undefined) as T | undefined,
    all: <T>(sql: string, ...params: SqlValue[]) => statement(sql).all(...params) as T[],
    transaction<T>(body: () => T): T {
      if (depth > 0) return body();
      db.exec("BEGIN IMMEDIATE");
      depth++;
      try {
        const result = body();
        db.exec("COMMIT");
        return result;
      } catch (error) {
        db.exec("ROLLBACK");
        throw error;
      } finally {
        depth--;
      }
    },
    close: () => {
      cache.clear();
      db.close();
    },
  };
}
