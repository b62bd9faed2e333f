import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll } from "vitest";
import { blankLabels, type CxrRecord, type LabelSet } from "../../packages/data/src/records.ts";

export const fixtures = join(dirname(fileURLToPath(import.meta.url)), "../fixtures/data");

/** A scratch folder removed after the test file. */
export function scratchFolder(prefix: string): string {
  const folder = mkdtempSync(join(tmpdir(), `cxr-data-${prefix}-`));
  afterAll(() => rmSync(folder, { recursive: true, force: true }));
  return folder;
}

export function makeRecord(
  overrides: Omit<Partial<CxrRecord>, "labels"> & { labels?: Partial<LabelSet> } = {},
): CxrRecord {
  const { labels, ...rest } = overrides;
  return {
    patientId: "patient1",
    studyId: "patient1/study1",
    imagePath: "/nonexistent.png",
    view: "PA",
    frontal: true,
    sex: "female",
    age: 50,
    race: "WHITE",
    institution: null,
    split: null,
    prompt: null,
    source: { file: "made-up.csv", row: 2, imageColumn: "Path" },
    ...rest,
    labels: { ...blankLabels(), ...labels },
  };
}
