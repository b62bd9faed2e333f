import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { IssueLog } from "../errors.ts";
import {
  blankLabels,
  CHEXPERT_LABELS,
  type CxrRecord,
  type LabelSet,
  type Race,
  type Sex,
  type Split,
} from "../records.ts";
import { columnIndex, readCsvTable, requireColumns } from "./csv.ts";
import { mapMimicRace } from "./demographics.ts";
import { labelColumns, RowReader } from "./fields.ts";
import { type LoadOptions, type LoadResult, resolveLoadOptions } from "./options.ts";

export interface MimicOptions extends LoadOptions {
  /** Folder holding `files/p10/...`; default: the dataset folder. */
  imageRoot?: string;
  /** MIMIC-IV `patients.csv` (subject_id, gender, anchor_age[, anchor_year]); default: one in the folder. */
  patientsCsv?: string;
  /** MIMIC-IV `admissions.csv` (subject_id, race or ethnicity); default: one in the folder. */
  admissionsCsv?: string;
}

export const MIMIC_FILES = {
  metadata: "mimic-cxr-2.0.0-metadata.csv",
  chexpert: "mimic-cxr-2.0.0-chexpert.csv",
  split: "mimic-cxr-2.0.0-split.csv",
  patients: "patients.csv",
  admissions: "admissions.csv",
} as const;

/** MIMIC's frontal views; LATERAL, LL, and the rare oblique/swimmer views are not frontal. */
const FRONTAL_VIEWS = new Set(["PA", "AP"]);

/**
 * Loads MIMIC-CXR-JPG: one record per image of the metadata table, joined with the study-level CheXpert
 * labels and the image-level split (`validate` becomes `valid`), plus sex, age and race from MIMIC-IV
 * when its tables are given. Each file may also be gzipped (`.csv.gz`), as PhysioNet ships them.
 */
export function loadMimic(path: string, options: MimicOptions = {}): LoadResult {
  const { onError, ageRange } = resolveLoadOptions(options);
  const log = new IssueLog(onError);
  const metadataFile = findTable(path, MIMIC_FILES.metadata);
  if (metadataFile === null) {
    throw new Error(`no MIMIC-CXR metadata in ${path} (looked for ${MIMIC_FILES.metadata}[.gz])`);
  }
  const chexpertFile = findTable(path, MIMIC_FILES.chexpert) ?? join(path, MIMIC_FILES.chexpert);
  const splitFile = findTable(path, MIMIC_FILES.split) ?? join(path, MIMIC_FILES.split);
  const patientsFile = options.patientsCsv ?? findTable(path, MIMIC_FILES.patients);
  const admissionsFile = options.admissionsCsv ?? findTable(path, MIMIC_FILES.admissions);

  const labelsByStudy = readStudyLabels(chexpertFile, log);
  const splitByImage = readSplits(splitFile, log);
  const patients = patientsFile === null ? null : readPatients(patientsFile, log, ageRange);
  const races = admissionsFile === null ? null : readRaces(admissionsFile, log);

  const records: CxrRecord[] = [];
  const table = readCsvTable(metadataFile, log);
  const columns =
    table === null
      ? null
      : requireColumns(table, ["dicom_id", "subject_id", "study_id", "ViewPosition"], log);
  if (table !== null && columns !== null) {
    const imageRoot = resolve(options.imageRoot ?? path);
    const studyDate = columnIndex(table, "StudyDate");
    for (const csvRow of table.rows) {
      const reader = new RowReader(table, csvRow, log);
      const dicomId = reader.text(columns.dicom_id);
      const subjectId = reader.text(columns.subject_id);
      const studyId = reader.text(columns.study_id);
      if (!/^\d+$/.test(subjectId))
        reader.problem("invalid-value", "subject_id", `subject_id "${subjectId}" is not a number`);
      if (!/^\d+$/.test(studyId))
        reader.problem("invalid-value", "study_id", `study_id "${studyId}" is not a number`);
      if (dicomId === "") reader.problem("invalid-value", "dicom_id", "dicom_id is blank");
      const labels = labelsByStudy?.get(studyKey(subjectId, studyId));
      if (labelsByStudy !== null && labels === undefined) {
        reader.problem("unmatched-row", "study_id", `study ${studyId} has no row in ${MIMIC_FILES.chexpert}`);
      }
      const split = splitByImage?.get(dicomId);
      if (splitByImage !== null && split === undefined) {
        reader.problem("unmatched-row", "dicom_id", `image ${dicomId} has no row in ${MIMIC_FILES.split}`);
      }
      if (labels !== undefined && "badRow" in labels) {
        const where = `${chexpertFile}:${labels.badRow}`;
        reader.problem(
          "unmatched-row",
          "study_id",
          `study ${studyId} is skipped: its label row ${where} is invalid`,
        );
      }
      if (!reader.finish()) continue;
      const patient = patients?.get(subjectId);
      const view = reader.text(columns.ViewPosition).toUpperCase();
      records.push({
        patientId: subjectId,
        studyId,
        imagePath: join(imageRoot, mimicImagePath(subjectId, studyId, dicomId)),
        view: view === "" ? null : view,
        frontal: FRONTAL_VIEWS.has(view),
        sex: patient?.sex ?? null,
        age: patient === undefined ? null : ageAtStudy(patient, reader.text(studyDate)),
        race: races?.get(subjectId) ?? null,
        institution: "MIMIC-CXR",
        labels: labels === undefined || "badRow" in labels ? blankLabels() : labels,
        split: split === undefined ? null : split,
        prompt: null,
        source: { file: metadataFile, row: csvRow.row, imageColumn: "dicom_id" },
      });
    }
  }
  const files = [metadataFile, chexpertFile, splitFile, patientsFile, admissionsFile].filter(
    (file): file is string => file !== null,
  );
  return { records, issues: log.issues, skipped: log.skipped, files };
}

/** `files/p10/p10000032/s50414267/<dicom_id>.jpg`: the folder `p10` is the first two digits of the subject. */
export function mimicImagePath(subjectId: string, studyId: string, dicomId: string): string {
  return `files/p${subjectId.slice(0, 2)}/p${subjectId}/s${studyId}/${dicomId}.jpg`;
}

function findTable(folder: string, name: string): string | null {
  for (const candidate of [join(folder, name), join(folder, `${name}.gz`)]) {
    if (existsSync(candidate)) return candidate;
  }
  return null;
}

function studyKey(subjectId: string, studyId: string): string {
  return `${subjectId}/${studyId}`;
}

/** A study whose label row was reported as bad; its images are skipped with a pointer to that row. */
interface BadStudyRow {
  badRow: number;
}

function readStudyLabels(file: string, log: IssueLog): Map<string, LabelSet | BadStudyRow> | null {
  const table = readCsvTable(file, log);
  if (table === null) return null;
  const columns = requireColumns(table, ["subject_id", "study_id", ...CHEXPERT_LABELS], log);
  if (columns === null) return null;
  const labels = labelColumns(table);
  const byStudy = new Map<string, LabelSet | BadStudyRow>();
  for (const csvRow of table.rows) {
    const reader = new RowReader(table, csvRow, log);
    const key = studyKey(reader.text(columns.subject_id), reader.text(columns.study_id));
    const studyLabels = reader.labels(labels);
    byStudy.set(key, reader.finish() ? studyLabels : { badRow: csvRow.row });
  }
  return byStudy;
}

function readSplits(file: string, log: IssueLog): Map<string, Split> | null {
  const table = readCsvTable(file, log);
  if (table === null) return null;
  const columns = requireColumns(table, ["dicom_id", "split"], log);
  if (columns === null) return null;
  const byImage = new Map<string, Split>();
  for (const csvRow of table.rows) {
    const reader = new RowReader(table, csvRow, log);
    const text = reader.text(columns.split).toLowerCase();
    const split: Split | null =
      text === "train"
        ? "train"
        : text === "validate" || text === "valid"
          ? "valid"
          : text === "test"
            ? "test"
            : null;
    if (split === null)
      reader.problem("invalid-value", "split", `unknown split "${text}" (expected train, validate or test)`);
    if (reader.finish() && split !== null) byImage.set(reader.text(columns.dicom_id), split);
  }
  return byImage;
}

interface MimicPatient {
  sex: Sex | null;
  anchorAge: number | null;
  anchorYear: number | null;
}

function readPatients(
  file: string,
  log: IssueLog,
  ageRange: { min: number; max: number },
): Map<string, MimicPatient> | null {
  const table = readCsvTable(file, log);
  if (table === null) return null;
  const columns = requireColumns(table, ["subject_id", "gender", "anchor_age"], log);
  if (columns === null) return null;
  const anchorYear = columnIndex(table, "anchor_year");
  const bySubject = new Map<string, MimicPatient>();
  for (const csvRow of table.rows) {
    const reader = new RowReader(table, csvRow, log);
    const year = reader.text(anchorYear);
    if (year !== "" && !/^\d{4}$/.test(year))
      reader.problem("invalid-value", "anchor_year", `anchor_year "${year}" is not a year`);
    const patient: MimicPatient = {
      sex: reader.sex(columns.gender, "gender"),
      anchorAge: reader.age(columns.anchor_age, "anchor_age", ageRange),
      anchorYear: year === "" ? null : Number(year),
    };
    if (reader.finish()) bySubject.set(reader.text(columns.subject_id), patient);
  }
  return bySubject;
}

/**
 * MIMIC-IV gives `anchor_age` in `anchor_year`, on the same shifted calendar as MIMIC-CXR's `StudyDate`
 * (YYYYMMDD), so the age at the radiograph is anchor_age + (study year - anchor_year).
 */
function ageAtStudy(patient: MimicPatient, studyDate: string): number | null {
  if (patient.anchorAge === null) return null;
  if (patient.anchorYear === null || !/^\d{8}$/.test(studyDate)) return patient.anchorAge;
  return patient.anchorAge + (Number(studyDate.slice(0, 4)) - patient.anchorYear);
}

/**
 * One race per subject from their admissions: the most frequent value that maps to a group, the earliest
 * in the file winning a tie; subjects with only unmapped values (UNKNOWN, OTHER, ...) get none.
 */
function readRaces(file: string, log: IssueLog): Map<string, Race> | null {
  const table = readCsvTable(file, log);
  if (table === null) return null;
  const raceColumnName = columnIndex(table, "race") >= 0 ? "race" : "ethnicity";
  const columns = requireColumns(table, ["subject_id", raceColumnName], log);
  if (columns === null) return null;
  const counts = new Map<string, Map<Race, number>>();
  for (const csvRow of table.rows) {
    const reader = new RowReader(table, csvRow, log);
    const race = mapMimicRace(reader.text(columns[raceColumnName]));
    if (race === null) continue;
    const subject = reader.text(columns.subject_id);
    const subjectCounts = counts.get(subject) ?? new Map<Race, number>();
    subjectCounts.set(race, (subjectCounts.get(race) ?? 0) + 1);
    counts.set(subject, subjectCounts);
  }
  const bySubject = new Map<string, Race>();
  for (const [subject, subjectCounts] of counts) {
    let best: Race | null = null;
    let bestCount = 0;
    for (const [race, count] of subjectCounts) {
      if (count > bestCount) [best, bestCount] = [race, count];
    }
    if (best !== null) bySubject.set(subject, best);
  }
  return bySubject;
}
