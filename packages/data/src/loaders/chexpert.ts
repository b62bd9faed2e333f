import { existsSync, statSync } from "node:fs";
import { basename, extname, join } from "node:path";
import { IssueLog } from "../errors.ts";
import { CHEXPERT_LABELS, type CxrRecord, type Race, type Sex, type Split } from "../records.ts";
import { chexpertPathResolver, patientAndStudy } from "./chexpertPaths.ts";
import { type CsvTable, columnIndex, readCsvTable, requireColumns } from "./csv.ts";
import { mapChexpertRace } from "./demographics.ts";
import { labelColumns, RowReader } from "./fields.ts";
import { type LoadOptions, type LoadResult, resolveLoadOptions } from "./options.ts";

export interface ChexpertOptions extends LoadOptions {
  /** CSV files to read; default: whichever of train.csv, valid.csv, test.csv the folder holds. */
  csvFiles?: string[];
  /** CheXpert demographics table exported to CSV (PATIENT, GENDER, AGE_AT_CXR, PRIMARY_RACE, ETHNICITY). */
  demographicsCsv?: string;
  /** Folder the CSV's `Path` values are relative to; found automatically when left out. */
  imageRoot?: string;
}

export const CHEXPERT_CSV_NAMES = ["train.csv", "valid.csv", "test.csv"] as const;

/**
 * Loads CheXpert's `train.csv`/`valid.csv` (and `test.csv`, as the phantom writes it) into records.
 * `path` is the dataset folder or one CSV file. Beyond Stanford's columns it reads `Race`,
 * `Institution` and `Prompt` when present (the phantom writes them); race otherwise comes from the
 * optional demographics table.
 */
export function loadChexpert(path: string, options: ChexpertOptions = {}): LoadResult {
  const { onError, ageRange } = resolveLoadOptions(options);
  const log = new IssueLog(onError);
  const csvFiles = options.csvFiles ?? chexpertCsvFiles(path);
  const demographics =
    options.demographicsCsv === undefined
      ? new Map()
      : readDemographics(options.demographicsCsv, log, ageRange);

  const records: CxrRecord[] = [];
  for (const file of csvFiles) {
    const table = readCsvTable(file, log);
    if (table === null) continue;
    records.push(...chexpertRecords(table, splitFromFileName(file), demographics, log, ageRange, options));
  }
  const files = options.demographicsCsv === undefined ? csvFiles : [...csvFiles, options.demographicsCsv];
  return { records, issues: log.issues, skipped: log.skipped, files };
}

function chexpertCsvFiles(path: string): string[] {
  if (existsSync(path) && statSync(path).isFile()) return [path];
  const files = CHEXPERT_CSV_NAMES.map((name) => join(path, name)).filter((file) => existsSync(file));
  if (files.length === 0) {
    throw new Error(`no CheXpert CSV in ${path} (looked for ${CHEXPERT_CSV_NAMES.join(", ")})`);
  }
  return files;
}

function splitFromFileName(file: string): Split | null {
  const name = basename(file, extname(file)).toLowerCase();
  if (name === "train") return "train";
  if (name === "valid" || name === "validate" || name === "val") return "valid";
  if (name === "test") return "test";
  return null;
}

interface PatientDemographics {
  race: Race | null;
  sex: Sex | null;
  age: number | null;
}

function readDemographics(
  file: string,
  log: IssueLog,
  ageRange: { min: number; max: number },
): Map<string, PatientDemographics> {
  const byPatient = new Map<string, PatientDemographics>();
  const table = readCsvTable(file, log);
  if (table === null) return byPatient;
  const columns = requireColumns(table, ["PATIENT", "PRIMARY_RACE"], log);
  if (columns === null) return byPatient;
  const ethnicity = columnIndex(table, "ETHNICITY");
  const gender = columnIndex(table, "GENDER");
  const age = columnIndex(table, "AGE_AT_CXR");
  for (const csvRow of table.rows) {
    const reader = new RowReader(table, csvRow, log);
    const patient = reader.text(columns.PATIENT);
    if (patient === "") reader.problem("invalid-value", "PATIENT", "patient id is blank");
    else if (byPatient.has(patient)) {
      reader.problem("invalid-value", "PATIENT", `patient ${patient} is listed more than once`);
    }
    const entry: PatientDemographics = {
      race: mapChexpertRace(reader.text(columns.PRIMARY_RACE), reader.text(ethnicity)),
      sex: reader.sex(gender, "GENDER"),
      age: reader.age(age, "AGE_AT_CXR", ageRange),
    };
    if (reader.finish()) byPatient.set(patient, entry);
  }
  return byPatient;
}

function chexpertRecords(
  table: CsvTable,
  split: Split | null,
  demographics: Map<string, PatientDemographics>,
  log: IssueLog,
  ageRange: { min: number; max: number },
  options: ChexpertOptions,
): CxrRecord[] {
  const required = requireColumns(table, ["Path", ...CHEXPERT_LABELS], log);
  if (required === null) return [];
  const labels = labelColumns(table);
  const sexColumn = columnIndex(table, "Sex");
  const ageColumn = columnIndex(table, "Age");
  const frontalLateral = columnIndex(table, "Frontal/Lateral");
  const apPa = columnIndex(table, "AP/PA");
  const raceColumn = columnIndex(table, "Race");
  const institution = columnIndex(table, "Institution");
  const prompt = columnIndex(table, "Prompt");
  const resolveImage = chexpertPathResolver(
    table.file,
    table.rows.map((row) => row.values[required.Path].trim()),
    options.imageRoot,
  );

  const records: CxrRecord[] = [];
  for (const csvRow of table.rows) {
    const reader = new RowReader(table, csvRow, log);
    const path = reader.text(required.Path);
    const ids = patientAndStudy(path);
    if (ids === null) {
      reader.problem("malformed-row", "Path", `path "${path}" is not <patient>/<study>/<image>`);
    }
    const view = readView(reader, frontalLateral, apPa, path);
    const rowLabels = reader.labels(labels);
    const patientDemographics = ids === null ? undefined : demographics.get(ids.patientId);
    const sex = reader.sex(sexColumn, "Sex");
    const age = reader.age(ageColumn, "Age", ageRange);
    // A `Race` column (the phantom's) wins over the separate demographics table.
    const race = raceColumn >= 0 ? reader.race(raceColumn, "Race") : (patientDemographics?.race ?? null);
    if (!reader.finish() || ids === null) continue;
    records.push({
      patientId: ids.patientId,
      studyId: ids.studyId,
      imagePath: resolveImage(path),
      view: view.view,
      frontal: view.frontal,
      // The per-image CSV values come first; the demographics table fills in "Unknown" or absent ones.
      sex: sex ?? patientDemographics?.sex ?? null,
      age: age ?? patientDemographics?.age ?? null,
      race,
      institution: reader.optionalText(institution),
      labels: rowLabels,
      split,
      prompt: reader.optionalText(prompt),
      source: { file: table.file, row: csvRow.row, imageColumn: "Path" },
    });
  }
  return records;
}

/** Frontal/Lateral says which; AP/PA (blank for laterals) gives the view. Without the column, the file name decides. */
function readView(
  reader: RowReader,
  frontalLateral: number,
  apPa: number,
  path: string,
): { view: string | null; frontal: boolean } {
  const position = reader.text(apPa).toUpperCase();
  let frontal: boolean;
  if (frontalLateral >= 0) {
    const text = reader.text(frontalLateral);
    if (/^frontal$/i.test(text)) frontal = true;
    else if (/^lateral$/i.test(text)) frontal = false;
    else {
      reader.problem("invalid-value", "Frontal/Lateral", `expected Frontal or Lateral, found "${text}"`);
      frontal = false;
    }
  } else {
    frontal = /frontal/i.test(basename(path));
  }
  const view = position !== "" ? position : frontal ? null : "LATERAL";
  return { view, frontal };
}
