import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { DataInputError, IssueLog } from "../../packages/data/src/errors.ts";
import { columnIndex, readCsvTable, requireColumns } from "../../packages/data/src/loaders/csv.ts";
import { scratchFolder } from "./helpers.ts";

const folder = scratchFolder("csv");

function writeCsv(name: string, text: string): string {
  const file = join(folder, name);
  writeFileSync(file, text);
  return file;
}

describe("readCsvTable", () => {
  it("numbers rows by line with the header as row 1, across quoted line breaks and blank lines", () => {
    const file = writeCsv("lines.csv", 'a,b\n1,2\n\n3,"multi\nline"\n4,5\n');
    const table = readCsvTable(file, new IssueLog("fail"))!;
    expect(table.header).toEqual(["a", "b"]);
    expect(table.rows.map((row) => [row.row, row.values])).toEqual([
      [2, ["1", "2"]],
      [4, ["3", "multi\nline"]],
      [6, ["4", "5"]],
    ]);
  });

  it("reports rows with the wrong field count and broken quotes, and skips them in skip mode", () => {
    const file = writeCsv("broken.csv", 'a,b\n1,2\n1,2,3\n4\n5,6\n7,"unterminated\n');
    const log = new IssueLog("skip");
    const table = readCsvTable(file, log)!;
    expect(table.rows.map((row) => row.row)).toEqual([2, 5]);
    expect(log.issues.map((issue) => [issue.kind, issue.row])).toEqual([
      ["malformed-row", 3],
      ["malformed-row", 4],
      ["malformed-row", 6],
    ]);
    expect(log.issues[0].message).toBe("expected 2 fields as in the header, found 3");
    expect(log.issues[2].message).toMatch(/quote/i);
    expect(log.skipped).toBe(3);
  });

  it("throws on the first malformed row in fail mode, naming file and row", () => {
    const file = writeCsv("broken-fail.csv", "a,b\n1,2\n1,2,3\n4\n");
    expect(() => readCsvTable(file, new IssueLog("fail"))).toThrow(
      new DataInputError({
        kind: "malformed-row",
        file,
        row: 3,
        column: null,
        message: "expected 2 fields as in the header, found 3",
      }),
    );
  });

  it("reports a missing file and strips a byte-order mark", () => {
    const log = new IssueLog("skip");
    expect(readCsvTable(join(folder, "absent.csv"), log)).toBeNull();
    expect(log.issues[0].kind).toBe("missing-file");
    const table = readCsvTable(writeCsv("bom.csv", "\uFEFFPath,Sex\nx,Male\n"), log)!;
    expect(columnIndex(table, "Path")).toBe(0);
    expect(columnIndex(table, "sex")).toBe(1);
  });

  it("reports every missing required column on the header row", () => {
    const file = writeCsv("columns.csv", "Path,Sex\nx,Male\ny,Female\n");
    const log = new IssueLog("skip");
    const table = readCsvTable(file, log)!;
    expect(requireColumns(table, ["Path", "Age", "Edema"], log)).toBeNull();
    expect(log.issues.map((issue) => [issue.kind, issue.row, issue.column])).toEqual([
      ["missing-column", 1, "Age"],
      ["missing-column", 1, "Edema"],
    ]);
    expect(log.skipped).toBe(2);
    expect(() => requireColumns(table, ["Age"], new IssueLog("fail"))).toThrow(
      `${file}:1: column "Age": required column "Age" is missing from the header`,
    );
  });
});
