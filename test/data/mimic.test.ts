import { cpSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { loadMimic, mimicImagePath } from "../../packages/data/src/loaders/mimic.ts";
import { fixtures, scratchFolder } from "./helpers.ts";

const dataset = join(fixtures, "mimic");
const metadata = join(dataset, "mimic-cxr-2.0.0-metadata.csv");
const chexpert = join(dataset, "mimic-cxr-2.0.0-chexpert.csv");
const patients = join(dataset, "patients.csv");
const scratch = scratchFolder("mimic");

describe("loadMimic", () => {
  const result = loadMimic(dataset, { onError: "skip" });

  it("joins metadata, study labels, image splits and MIMIC-IV demographics", () => {
    expect(
      result.records.map((record) => [
        record.patientId,
        record.studyId,
        record.view,
        record.frontal,
        record.split,
        record.sex,
        record.age,
        record.race,
      ]),
    ).toEqual([
      ["10000032", "50414267", "PA", true, "train", "female", 52, "WHITE"],
      ["10000032", "50414267", "LATERAL", false, "train", "female", 52, "WHITE"],
      // anchor_age 52 in anchor_year 2180; this study is dated 2182.
      ["10000032", "53189527", "AP", true, "train", "female", 54, "WHITE"],
      ["10000764", "57375967", "AP", true, "valid", "male", 86, "BLACK"],
      ["10000935", "51178377", "PA", true, "test", "female", 52, "ASIAN"],
      ["10000980", "54577367", "AP", true, "train", "female", 76, "HISPANIC"],
      // Its patients.csv row has an impossible age and was skipped; admissions say OTHER.
      ["10001176", "53186264", "PA", true, "train", null, null, null],
    ]);
    expect(result.records[3].labels).toMatchObject({ Consolidation: -1, Pneumonia: -1, "No Finding": null });
    expect(result.records[0].imagePath).toBe(
      join(dataset, "files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg"),
    );
    expect(result.records[0].institution).toBe("MIMIC-CXR");
  });

  it("reports every bad row with file, row and column, and skips the images they concern", () => {
    expect(result.issues.map((issue) => [issue.kind, issue.file, issue.row, issue.column])).toEqual([
      ["unknown-label-value", chexpert, 5, "Cardiomegaly"],
      ["age-out-of-range", patients, 9, "anchor_age"],
      ["malformed-row", metadata, 12, null],
      ["unmatched-row", metadata, 6, "study_id"],
      ["unmatched-row", metadata, 9, "dicom_id"],
      ["unmatched-row", metadata, 10, "study_id"],
    ]);
    expect(result.issues[3].message).toBe(
      `study 50771383 is skipped: its label row ${chexpert}:5 is invalid`,
    );
    expect(result.issues[4].message).toBe(
      "image 8c3d2e1f-4a5b6c7d-8e9f0a1b-2c3d4e5f-6a7b8c9d has no row in mimic-cxr-2.0.0-split.csv",
    );
    expect(result.issues[5].message).toBe("study 59999999 has no row in mimic-cxr-2.0.0-chexpert.csv");
    expect(result.skipped).toBe(6);
  });

  it("fail mode stops at the first problem", () => {
    expect(() => loadMimic(dataset)).toThrow(
      `${chexpert}:5: column "Cardiomegaly": unknown label value "yes" (expected 1.0, 0.0, -1.0 or blank)`,
    );
  });

  it("reads gzipped tables as PhysioNet ships them, and works without MIMIC-IV tables", () => {
    const copy = join(scratch, "gz");
    cpSync(dataset, copy, { recursive: true });
    for (const name of ["mimic-cxr-2.0.0-metadata.csv", "mimic-cxr-2.0.0-chexpert.csv"]) {
      writeFileSync(join(copy, `${name}.gz`), gzipSync(readFileSync(join(copy, name))));
      rmSync(join(copy, name));
    }
    rmSync(join(copy, "patients.csv"));
    rmSync(join(copy, "admissions.csv"));
    const gz = loadMimic(copy, { onError: "skip" });
    expect(gz.records.map((record) => record.studyId)).toEqual(
      result.records.map((record) => record.studyId),
    );
    expect(
      gz.records.every((record) => record.sex === null && record.age === null && record.race === null),
    ).toBe(true);
    expect(gz.issues.map((issue) => issue.kind)).toEqual([
      "unknown-label-value",
      "malformed-row",
      "unmatched-row",
      "unmatched-row",
      "unmatched-row",
    ]);
  });

  it("a missing split table is reported, and the images keep no split", () => {
    const copy = join(scratch, "no-split");
    cpSync(dataset, copy, { recursive: true });
    rmSync(join(copy, "mimic-cxr-2.0.0-split.csv"));
    // Repair the bad label row so that the missing table is the first problem.
    const labels = join(copy, "mimic-cxr-2.0.0-chexpert.csv");
    writeFileSync(labels, readFileSync(labels, "utf8").replace(",yes,", ",1.0,"));
    const noSplit = loadMimic(copy, { onError: "skip" });
    expect(noSplit.issues[0]).toMatchObject({
      kind: "missing-file",
      file: join(copy, "mimic-cxr-2.0.0-split.csv"),
    });
    expect(noSplit.records.every((record) => record.split === null)).toBe(true);
    expect(() => loadMimic(copy)).toThrow("mimic-cxr-2.0.0-split.csv: file not found");
  });

  it("names the metadata file it looked for", () => {
    expect(() => loadMimic(scratch)).toThrow(
      /no MIMIC-CXR metadata in .*mimic-cxr-2.0.0-metadata.csv\[.gz\]/,
    );
  });

  it("builds MIMIC's image paths", () => {
    expect(mimicImagePath("10000032", "50414267", "abc")).toBe("files/p10/p10000032/s50414267/abc.jpg");
  });
});
