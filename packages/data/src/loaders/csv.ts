import { existsSync, readFileSync } from "node:fs";
import { gunzipSync } from "node:zlib";
import Papa from "papaparse";
import type { IssueLog } from "../errors.ts";

/** One data row of a CSV file; `row` is its 1-based line number with the header on line 1. */
export interface CsvRow {
  row: number;
  values: string[];
}

export interface CsvTable {
  file: string;
  header: string[];
  rows: CsvRow[];
}

/**
 * Reads a CSV (or `.csv.gz`, as MIMIC ships them) into rows that remember their line number, so every
 * later problem can be reported as `file:row`. Rows whose field count differs from the header, or whose
 * quoting is broken, are reported as malformed and left out (skip mode) or stop the load (fail mode).
 * Entirely empty lines carry no record and are passed over.
 */
export function readCsvTable(file: string, log: IssueLog): CsvTable | null {
  if (!existsSync(file)) {
    log.report({ kind: "missing-file", file, row: null, column: null, message: "file not found" });
    return null;
  }
  const bytes = readFileSync(file);
  const text = (file.endsWith(".gz") ? gunzipSync(bytes) : bytes).toString("utf8").replace(/^\uFEFF/, "");

  const records: { line: number; values: string[]; error: string | null }[] = [];
  let consumedUpTo = 0;
  let line = 1;
  Papa.parse<string[]>(text, {
    delimiter: ",",
    header: false,
    step: (step) => {
      const values = step.data;
      records.push({ line, values, error: step.errors.length > 0 ? step.errors[0].message : null });
      // Advance the line counter over this record, which may span lines inside quoted fields.
      const cursor = step.meta.cursor;
      for (let index = consumedUpTo; index < cursor; index++) if (text.charCodeAt(index) === 10) line++;
      consumedUpTo = cursor;
    },
  });

  const headerRecord = records.shift();
  if (headerRecord === undefined || isEmptyRecord(headerRecord.values)) {
    log.report({ kind: "missing-column", file, row: 1, column: null, message: "the file has no header row" });
    return null;
  }
  const header = headerRecord.values.map((name) => name.trim());
  const rows: CsvRow[] = [];
  for (const record of records) {
    if (isEmptyRecord(record.values)) continue;
    if (record.error !== null || record.values.length !== header.length) {
      const reason =
        record.error ?? `expected ${header.length} fields as in the header, found ${record.values.length}`;
      log.report({ kind: "malformed-row", file, row: record.line, column: null, message: reason });
      log.skip();
      continue;
    }
    rows.push({ row: record.line, values: record.values });
  }
  return { file, header, rows };
}

function isEmptyRecord(values: string[]): boolean {
  return values.length === 1 && values[0].trim() === "";
}

/** Index of a column by exact name, else case-insensitively; -1 when absent. */
export function columnIndex(table: CsvTable, name: string): number {
  const exact = table.header.indexOf(name);
  if (exact >= 0) return exact;
  const lower = name.toLowerCase();
  return table.header.findIndex((column) => column.toLowerCase() === lower);
}

/**
 * Resolves required columns; each missing one is reported on the header row. Returns null if any is
 * missing, because without it no row of the file can be read.
 */
export function requireColumns<Name extends string>(
  table: CsvTable,
  names: readonly Name[],
  log: IssueLog,
): Record<Name, number> | null {
  const indices = {} as Record<Name, number>;
  let complete = true;
  for (const name of names) {
    const index = columnIndex(table, name);
    if (index < 0) {
      log.report({
        kind: "missing-column",
        file: table.file,
        row: 1,
        column: name,
        message: `required column "${name}" is missing from the header`,
      });
      complete = false;
    }
    indices[name] = index;
  }
  if (!complete) log.skip(table.rows.length);
  return complete ? indices : null;
}
