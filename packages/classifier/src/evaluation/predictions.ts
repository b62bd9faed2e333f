/**
 * The predictions table: one row per image with the patient's demographics and, per CheXpert label,
 * the true value and the predicted probability. Read from the predictions CSV (format in
 * packages/classifier/README.md) or built in memory by classifier training.
 */
import { readFileSync } from "node:fs";
import {
  type AgeBin,
  ageBin,
  CHEXPERT_LABELS,
  type ChexpertLabel,
  parseSex,
  RACES,
  type Race,
  SEXES,
  type Sex,
} from "@cxr/data";
import Papa from "papaparse";
import { TRUTH_BLANK, TRUTH_NEGATIVE, TRUTH_POSITIVE, TRUTH_UNCERTAIN } from "./auroc.ts";

export interface PredictionRow {
  readonly patientId: string;
  /** Optional image identifier; when both files have it, a baseline is matched on it. */
  readonly imageId: string | null;
  readonly sex: Sex;
  readonly age: number;
  readonly ageBin: AgeBin;
  readonly race: Race;
  readonly institution: string | null;
}

export interface PredictionTable {
  /** File path (or a caller's description) used in messages. */
  readonly source: string;
  /** Labels present, in CheXpert order. */
  readonly labels: readonly ChexpertLabel[];
  /** CheXpert labels without columns in this table. */
  readonly missingLabels: readonly ChexpertLabel[];
  readonly rows: readonly PredictionRow[];
  /** truth[labelIndex][row]: TRUTH_POSITIVE, TRUTH_NEGATIVE, TRUTH_UNCERTAIN or TRUTH_BLANK. */
  readonly truth: readonly Int8Array[];
  /** probability[labelIndex][row], in [0, 1]. */
  readonly probability: readonly Float64Array[];
  /** Columns present in the file that the evaluation does not use. */
  readonly ignoredColumns: readonly string[];
  /** 1-based CSV row of each table row (header = row 1); null for tables built in memory. */
  readonly sourceRows: Int32Array | null;
}

export const TRUE_SUFFIX = "_true";
export const PROBABILITY_SUFFIX = "_prob";
const REQUIRED_COLUMNS = ["patient_id", "sex", "age", "race"] as const;
const OPTIONAL_COLUMNS = ["institution", "image_id"] as const;

/** Normalises a race value case-insensitively against RACES, or returns null when unknown. */
export function parseRace(value: string): Race | null {
  const upper = value.trim().toUpperCase();
  return (RACES as readonly string[]).includes(upper) ? (upper as Race) : null;
}

/** Parses a truth cell: 1, 0, -1 (uncertain) or blank; accepts CheXpert's "1.0" spelling. */
export function parseTruthCell(value: string): number | null {
  const trimmed = value.trim();
  if (trimmed === "") return TRUTH_BLANK;
  const number = Number(trimmed);
  if (number === 1) return TRUTH_POSITIVE;
  if (number === 0) return TRUTH_NEGATIVE;
  if (number === -1) return TRUTH_UNCERTAIN;
  return null;
}

export function readPredictionsCsv(path: string): PredictionTable {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    throw new Error(
      `cannot read predictions file ${path}: ${error instanceof Error ? error.message : error}`,
    );
  }
  return parsePredictionsCsv(text, path);
}

export function parsePredictionsCsv(text: string, source: string): PredictionTable {
  const content = text.replace(/^\uFEFF/, "");
  if (content.trim() === "") throw new Error(`${source}: the file is empty (expected a header row)`);
  const parsed = Papa.parse<string[]>(content, { delimiter: ",", skipEmptyLines: "greedy" });
  if (parsed.errors.length > 0) {
    const first = parsed.errors[0];
    const where = first.row === undefined ? "" : ` at row ${first.row + 1}`;
    throw new Error(`${source}: CSV syntax error${where}: ${first.message}`);
  }
  const [header, ...records] = parsed.data;
  const columns = resolveColumns(header, source);

  const rowCount = records.length;
  if (rowCount === 0) throw new Error(`${source}: no data rows after the header`);
  const truth = columns.labels.map(() => new Int8Array(rowCount));
  const probability = columns.labels.map(() => new Float64Array(rowCount));
  const rows: PredictionRow[] = new Array(rowCount);
  const sourceRows = new Int32Array(rowCount);

  for (let index = 0; index < rowCount; index++) {
    const record = records[index];
    const csvRow = index + 2;
    sourceRows[index] = csvRow;
    if (record.length !== header.length) {
      throw new Error(
        `${source} row ${csvRow}: ${record.length} fields, but the header has ${header.length}`,
      );
    }
    const cell = (column: number): string => record[column] ?? "";
    const where = (column: number): string => `${source} row ${csvRow}, column "${header[column]}"`;

    const patientId = cell(columns.patientId).trim();
    if (patientId === "") throw new Error(`${where(columns.patientId)}: patient id is blank`);
    // @cxr/data's parseSex: null for a blank or "Unknown" cell, undefined for anything else it does
    // not know; an evaluation needs every image's sex, so both are errors here.
    const sex = parseSex(cell(columns.sex));
    if (sex === null || sex === undefined) {
      throw new Error(
        `${where(columns.sex)}: unknown sex "${cell(columns.sex)}" (expected ${SEXES.join(" or ")}, or F/M)`,
      );
    }
    const age = Number(cell(columns.age).trim());
    if (cell(columns.age).trim() === "" || !Number.isFinite(age) || age < 0 || age > 130) {
      throw new Error(
        `${where(columns.age)}: age "${cell(columns.age)}" is not a number of years in [0, 130]`,
      );
    }
    const race = parseRace(cell(columns.race));
    if (race === null) {
      throw new Error(
        `${where(columns.race)}: unknown race "${cell(columns.race)}" (expected one of ${RACES.join(", ")})`,
      );
    }
    const institution = columns.institution === null ? null : cell(columns.institution).trim();
    if (institution === "") {
      throw new Error(`${where(columns.institution!)}: institution is blank (fill it or drop the column)`);
    }
    const imageId = columns.imageId === null ? null : cell(columns.imageId).trim();
    if (imageId === "") throw new Error(`${where(columns.imageId!)}: image id is blank`);
    rows[index] = { patientId, imageId, sex, age, ageBin: ageBin(age), race, institution };

    for (let labelIndex = 0; labelIndex < columns.labels.length; labelIndex++) {
      const { trueColumn, probabilityColumn } = columns.labelColumns[labelIndex];
      const truthCode = parseTruthCell(cell(trueColumn));
      if (truthCode === null) {
        throw new Error(
          `${where(trueColumn)}: true value "${cell(trueColumn)}" must be 1, 0, -1 (uncertain) or blank`,
        );
      }
      truth[labelIndex][index] = truthCode;
      probability[labelIndex][index] = parseProbability(cell(probabilityColumn), where(probabilityColumn));
    }
  }

  return {
    source,
    labels: columns.labels,
    missingLabels: CHEXPERT_LABELS.filter((label) => !columns.labels.includes(label)),
    rows,
    truth,
    probability,
    ignoredColumns: columns.ignored,
    sourceRows,
  };
}

function parseProbability(value: string, where: string): number {
  const trimmed = value.trim();
  if (trimmed === "") throw new Error(`${where}: probability is blank`);
  const number = Number(trimmed);
  if (Number.isNaN(number)) throw new Error(`${where}: probability "${value}" is not a number`);
  if (!(number >= 0 && number <= 1)) throw new Error(`${where}: probability ${value} is outside [0, 1]`);
  return number;
}

interface ResolvedColumns {
  patientId: number;
  sex: number;
  age: number;
  race: number;
  institution: number | null;
  imageId: number | null;
  labels: ChexpertLabel[];
  labelColumns: { trueColumn: number; probabilityColumn: number }[];
  ignored: string[];
}

/** Maps header names (case-insensitive, surrounding spaces ignored) to column positions. */
function resolveColumns(header: string[], source: string): ResolvedColumns {
  const positionByName = new Map<string, number>();
  header.forEach((name, position) => {
    const key = name.trim().toLowerCase();
    if (positionByName.has(key)) throw new Error(`${source}: column "${name}" appears twice in the header`);
    positionByName.set(key, position);
  });
  const missing = REQUIRED_COLUMNS.filter((name) => !positionByName.has(name));
  if (missing.length > 0) {
    throw new Error(
      `${source}: missing column${missing.length > 1 ? "s" : ""} ${missing.map((name) => `"${name}"`).join(", ")}` +
        ` (header has: ${header.join(", ")})`,
    );
  }
  const used = new Set<string>([...REQUIRED_COLUMNS, ...OPTIONAL_COLUMNS]);
  const labelColumnNames = new Set(
    CHEXPERT_LABELS.flatMap((label) => [`${label}${TRUE_SUFFIX}`, `${label}${PROBABILITY_SUFFIX}`]).map(
      (name) => name.toLowerCase(),
    ),
  );
  // A column that looks like a label column but names no CheXpert label is a typo, not extra data.
  const strayLabelColumns = header.filter((name) => {
    const key = name.trim().toLowerCase();
    return (key.endsWith(TRUE_SUFFIX) || key.endsWith(PROBABILITY_SUFFIX)) && !labelColumnNames.has(key);
  });
  const labels: ChexpertLabel[] = [];
  const labelColumns: ResolvedColumns["labelColumns"] = [];
  for (const label of CHEXPERT_LABELS) {
    const trueName = `${label}${TRUE_SUFFIX}`.toLowerCase();
    const probabilityName = `${label}${PROBABILITY_SUFFIX}`.toLowerCase();
    const trueColumn = positionByName.get(trueName);
    const probabilityColumn = positionByName.get(probabilityName);
    if (trueColumn === undefined && probabilityColumn === undefined) continue;
    if (trueColumn === undefined || probabilityColumn === undefined) {
      const absent = trueColumn === undefined ? `${label}${TRUE_SUFFIX}` : `${label}${PROBABILITY_SUFFIX}`;
      const hint =
        strayLabelColumns.length > 0
          ? ` (misspelled as ${strayLabelColumns.map((name) => `"${name}"`).join(", ")}?)`
          : "";
      throw new Error(
        `${source}: label "${label}" has one column but not "${absent}"${hint}; each label needs both`,
      );
    }
    used.add(trueName).add(probabilityName);
    labels.push(label);
    labelColumns.push({ trueColumn, probabilityColumn });
  }
  if (strayLabelColumns.length > 0) {
    throw new Error(
      `${source}: column "${strayLabelColumns[0]}" does not name a CheXpert label (expected "<Label>${TRUE_SUFFIX}" ` +
        `and "<Label>${PROBABILITY_SUFFIX}" with Label one of: ${CHEXPERT_LABELS.join(", ")})`,
    );
  }
  if (labels.length === 0) {
    throw new Error(
      `${source}: no label columns found (expected pairs like "No Finding${TRUE_SUFFIX}", "No Finding${PROBABILITY_SUFFIX}")`,
    );
  }
  const optional = (name: string): number | null => positionByName.get(name) ?? null;
  return {
    patientId: positionByName.get("patient_id")!,
    sex: positionByName.get("sex")!,
    age: positionByName.get("age")!,
    race: positionByName.get("race")!,
    institution: optional("institution"),
    imageId: optional("image_id"),
    labels,
    labelColumns,
    ignored: header.filter((name) => !used.has(name.trim().toLowerCase())),
  };
}

/** What a caller (classifier training) supplies to build a table in memory. */
export interface PredictionInput {
  readonly source: string;
  readonly rows: readonly {
    patientId: string;
    imageId?: string | null;
    sex: Sex;
    age: number;
    race: Race;
    institution?: string | null;
  }[];
  /** Per label: truth values (1, 0, -1 or null for blank) and probabilities, one per row. */
  readonly labels: Partial<
    Record<ChexpertLabel, { truth: ArrayLike<number | null>; probability: ArrayLike<number> }>
  >;
}

/** Builds and validates a table from in-memory arrays, with the same checks as the CSV reader. */
export function createPredictionTable(input: PredictionInput): PredictionTable {
  const { source } = input;
  const rowCount = input.rows.length;
  if (rowCount === 0) throw new Error(`${source}: no rows`);
  const rows = input.rows.map((row, index): PredictionRow => {
    const where = `${source} row ${index}`;
    if (row.patientId.trim() === "") throw new Error(`${where}: patient id is blank`);
    if (!SEXES.includes(row.sex)) throw new Error(`${where}: unknown sex "${row.sex}"`);
    if (!RACES.includes(row.race)) throw new Error(`${where}: unknown race "${row.race}"`);
    if (!Number.isFinite(row.age) || row.age < 0 || row.age > 130) {
      throw new Error(`${where}: age ${row.age} is not a number of years in [0, 130]`);
    }
    return {
      patientId: row.patientId,
      imageId: row.imageId ?? null,
      sex: row.sex,
      age: row.age,
      ageBin: ageBin(row.age),
      race: row.race,
      institution: row.institution ?? null,
    };
  });
  const labels = CHEXPERT_LABELS.filter((label) => input.labels[label] !== undefined);
  if (labels.length === 0) throw new Error(`${source}: no labels given`);
  const truth: Int8Array[] = [];
  const probability: Float64Array[] = [];
  for (const label of labels) {
    const column = input.labels[label]!;
    if (column.truth.length !== rowCount || column.probability.length !== rowCount) {
      throw new Error(
        `${source}: label "${label}" has ${column.truth.length} truth values and ` +
          `${column.probability.length} probabilities for ${rowCount} rows`,
      );
    }
    const truthCodes = new Int8Array(rowCount);
    const probabilities = new Float64Array(rowCount);
    for (let row = 0; row < rowCount; row++) {
      const value = column.truth[row];
      const code = value === null ? TRUTH_BLANK : parseTruthCell(String(value));
      if (code === null)
        throw new Error(
          `${source} row ${row}, label "${label}": true value ${value} is not 1, 0, -1 or null`,
        );
      truthCodes[row] = code;
      const p = column.probability[row];
      if (!(p >= 0 && p <= 1))
        throw new Error(`${source} row ${row}, label "${label}": probability ${p} is outside [0, 1]`);
      probabilities[row] = p;
    }
    truth.push(truthCodes);
    probability.push(probabilities);
  }
  return {
    source,
    labels,
    missingLabels: CHEXPERT_LABELS.filter((label) => !labels.includes(label)),
    rows,
    truth,
    probability,
    ignoredColumns: [],
    sourceRows: null,
  };
}

/** Where a table row came from, for messages: "file row N" or "source row index". */
export function describeRow(table: PredictionTable, row: number): string {
  return table.sourceRows === null
    ? `${table.source} row ${row}`
    : `${table.source} row ${table.sourceRows[row]}`;
}

/** Writes a table in the predictions CSV format (the inverse of {@link parsePredictionsCsv}). */
export function formatPredictionsCsv(table: PredictionTable): string {
  const hasImageId = table.rows.every((row) => row.imageId !== null);
  const hasInstitution = table.rows.every((row) => row.institution !== null);
  const header = [
    "patient_id",
    ...(hasImageId ? ["image_id"] : []),
    "sex",
    "age",
    "race",
    ...(hasInstitution ? ["institution"] : []),
    ...table.labels.flatMap((label) => [`${label}${TRUE_SUFFIX}`, `${label}${PROBABILITY_SUFFIX}`]),
  ];
  const truthText = (code: number): string =>
    code === TRUTH_POSITIVE ? "1" : code === TRUTH_NEGATIVE ? "0" : code === TRUTH_UNCERTAIN ? "-1" : "";
  const lines = [Papa.unparse([header])];
  table.rows.forEach((row, index) => {
    const cells: (string | number)[] = [
      row.patientId,
      ...(hasImageId ? [row.imageId!] : []),
      row.sex,
      row.age,
      row.race,
      ...(hasInstitution ? [row.institution!] : []),
    ];
    table.labels.forEach((_, labelIndex) => {
      cells.push(truthText(table.truth[labelIndex][index]), table.probability[labelIndex][index]);
    });
    lines.push(Papa.unparse([cells]));
  });
  return `${lines.join("\n")}\n`;
}
