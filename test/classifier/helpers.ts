import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll } from "vitest";
import { Rng } from "../../packages/data/src/random.ts";
import { CHEXPERT_LABELS, type ChexpertLabel } from "../../packages/data/src/records.ts";

export const here = dirname(fileURLToPath(import.meta.url));
export const repositoryRoot = join(here, "../..");
export const fixtures = join(here, "../fixtures/classifier");

/** A scratch folder removed after the test file. */
export function scratchFolder(prefix: string): string {
  const folder = mkdtempSync(join(tmpdir(), `cxr-classifier-${prefix}-`));
  afterAll(() => rmSync(folder, { recursive: true, force: true }));
  return folder;
}

/** Builds a predictions CSV from rows of cells (header first). */
export function csv(rows: (string | number)[][]): string {
  return `${rows.map((row) => row.join(",")).join("\n")}\n`;
}

export interface RandomCsvOptions {
  seed: number;
  images: number;
  labels: readonly ChexpertLabel[];
  /** Probabilities drawn from k / probabilitySteps, so small values give many ties. */
  probabilitySteps: number;
  institution: boolean;
  /** Labels whose true value is always 0 or blank (AUROC undefined everywhere). */
  singleClassLabels?: readonly ChexpertLabel[];
  /** Lower-case the header, to check case-insensitive columns. */
  lowerCaseHeader?: boolean;
}

const SEX_SPELLINGS = ["F", "female", "Female", "M", "male", "MALE"];
// Boundary ages on purpose: bins are [0,20), [20,40), [40,60), [60,80), [80, ...).
const AGES = [0, 7, 19.5, 20, 33, 39.9, 40, 51, 59, 60, 72, 79.99, 80, 91];

/**
 * A random predictions file with ties, uncertain and blank truths, repeated patients, a rare race
 * (tiny subgroups) and, optionally, labels with a single class.
 */
export function randomPredictionsCsv(options: RandomCsvOptions): string {
  const random = Rng.derive("random predictions csv", options.seed);
  const pick = <T>(values: readonly T[]): T => values[random.index(values.length)];
  const header = ["patient_id", "sex", "age", "race", ...(options.institution ? ["institution"] : [])];
  for (const label of options.labels) header.push(`${label}_true`, `${label}_prob`);
  const rows: (string | number)[][] = [
    options.lowerCaseHeader ? header.map((name) => name.toLowerCase()) : header,
  ];
  const patients = Math.max(1, Math.round(options.images / 2));
  const patientSex = Array.from({ length: patients }, () => pick(SEX_SPELLINGS));
  const patientRace = Array.from({ length: patients }, () => {
    const u = random.next();
    return u < 0.5 ? "WHITE" : u < 0.75 ? "BLACK" : u < 0.97 ? "ASIAN" : "hispanic";
  });
  for (let image = 0; image < options.images; image++) {
    const patient = random.index(patients);
    const row: (string | number)[] = [`p${patient}`, patientSex[patient], pick(AGES), patientRace[patient]];
    if (options.institution) row.push(pick(["site-a", "site-b", "site-c"]));
    for (const label of options.labels) {
      const u = random.next();
      const single = options.singleClassLabels?.includes(label) ?? false;
      const truth = u < 0.05 ? "-1" : u < 0.1 ? "" : single ? "0" : random.next() < 0.35 ? "1" : "0";
      // Informative but noisy scores: positives lean high.
      const lean = truth === "1" ? 0.3 : 0;
      const value = Math.min(1, Math.max(0, random.next() * 0.7 + lean));
      row.push(truth, Math.round(value * options.probabilitySteps) / options.probabilitySteps);
    }
    rows.push(row);
  }
  return csv(rows);
}

export const ALL_LABELS = CHEXPERT_LABELS;
