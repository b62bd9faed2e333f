import type { IssueKind, IssueLog } from "../errors.ts";
import { CHEXPERT_LABELS, type LabelSet, type LabelValue, type Race, type Sex } from "../records.ts";
import type { CsvRow, CsvTable } from "./csv.ts";
import { columnIndex } from "./csv.ts";
import { parseRaceGroup } from "./demographics.ts";

/**
 * Reads typed fields from one CSV row. Each bad field is reported with its column; the row is marked
 * bad and the caller drops it once all its fields have been looked at, so a row with two problems
 * shows both (skip mode) while fail mode stops at the first.
 */
export class RowReader {
  private bad = false;

  constructor(
    readonly table: CsvTable,
    readonly csvRow: CsvRow,
    private readonly log: IssueLog,
  ) {}

  get row(): number {
    return this.csvRow.row;
  }

  /** Trimmed text of a column; "" when the column is absent (index -1). */
  text(index: number): string {
    return index < 0 ? "" : this.csvRow.values[index].trim();
  }

  problem(kind: IssueKind, column: string | null, message: string): void {
    this.bad = true;
    this.log.report({ kind, file: this.table.file, row: this.csvRow.row, column, message });
  }

  /** True when the row is usable; otherwise counts it as skipped. */
  finish(): boolean {
    if (this.bad) this.log.skip();
    return !this.bad;
  }

  label(index: number, column: string): LabelValue {
    const text = this.text(index);
    const value = parseLabelValue(text);
    if (value === undefined) {
      this.problem(
        "unknown-label-value",
        column,
        `unknown label value "${text}" (expected 1.0, 0.0, -1.0 or blank)`,
      );
      return null;
    }
    return value;
  }

  labels(indices: LabelColumns): LabelSet {
    const labels = {} as LabelSet;
    for (const label of CHEXPERT_LABELS) labels[label] = this.label(indices[label], label);
    return labels;
  }

  sex(index: number, column: string): Sex | null {
    const text = this.text(index);
    const value = parseSex(text);
    if (value === undefined) {
      this.problem("invalid-value", column, `unknown sex "${text}" (expected Female, Male, F, M or Unknown)`);
      return null;
    }
    return value;
  }

  age(index: number, column: string, range: { min: number; max: number }): number | null {
    const text = this.text(index);
    if (text === "") return null;
    const age = Number(text);
    if (!Number.isFinite(age)) {
      this.problem("invalid-value", column, `age "${text}" is not a number`);
      return null;
    }
    if (age < range.min || age > range.max) {
      this.problem("age-out-of-range", column, `age ${text} is outside ${range.min}-${range.max} years`);
      return null;
    }
    return age;
  }

  race(index: number, column: string): Race | null {
    const text = this.text(index);
    const race = parseRaceGroup(text);
    if (race === undefined) {
      this.problem(
        "invalid-value",
        column,
        `unknown race "${text}" (expected WHITE, BLACK, ASIAN, HISPANIC)`,
      );
      return null;
    }
    return race;
  }

  /** A column's text, or null when blank or absent. */
  optionalText(index: number): string | null {
    const text = this.text(index);
    return text === "" ? null : text;
  }
}

export type LabelColumns = Record<(typeof CHEXPERT_LABELS)[number], number>;

/** Column index of each CheXpert label; -1 for a label the file lacks. */
export function labelColumns(table: CsvTable): LabelColumns {
  const indices = {} as LabelColumns;
  for (const label of CHEXPERT_LABELS) indices[label] = columnIndex(table, label);
  return indices;
}

/** CheXpert coding: "1.0"/"1" positive, "0.0"/"0" negative, "-1.0"/"-1" uncertain, blank; else undefined. */
export function parseLabelValue(text: string): LabelValue | undefined {
  const trimmed = text.trim();
  if (trimmed === "") return null;
  if (!/^-?\d+(\.\d+)?$/.test(trimmed)) return undefined;
  const value = Number(trimmed);
  return value === 1 || value === 0 || value === -1 ? value : undefined;
}

export function parseSex(text: string): Sex | null | undefined {
  const value = text.trim().toLowerCase();
  if (value === "female" || value === "f") return "female";
  if (value === "male" || value === "m") return "male";
  if (value === "" || value === "unknown" || value === "u") return null;
  return undefined;
}
