import { cpSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { DataInputError } from "../../packages/data/src/errors.ts";
import { loadChexpert } from "../../packages/data/src/loaders/chexpert.ts";
import { CHEXPERT_LABELS } from "../../packages/data/src/records.ts";
import { fixtures, scratchFolder } from "./helpers.ts";

const dataset = join(fixtures, "chexpert/CheXpert-v1.0-small");
const demographicsCsv = join(fixtures, "chexpert/demographics.csv");
const badFolder = join(fixtures, "chexpert-bad");
const scratch = scratchFolder("chexpert");

const HEADER = [
  "Path",
  "Sex",
  "Age",
  "Frontal/Lateral",
  "AP/PA",
  ...CHEXPERT_LABELS,
  "Race",
  "Institution",
  "Prompt",
].join(",");
const BLANK_LABELS = ",".repeat(CHEXPERT_LABELS.length - 1);

describe("loadChexpert on Stanford's layout", () => {
  const result = loadChexpert(dataset, { demographicsCsv });

  it("reads train.csv and valid.csv with their splits, views and labels", () => {
    expect(result.issues).toEqual([]);
    expect(result.skipped).toBe(0);
    expect(
      result.records.map((record) => [record.patientId, record.studyId, record.split, record.view]),
    ).toEqual([
      ["patient00001", "patient00001/study1", "train", "AP"],
      ["patient00001", "patient00001/study1", "train", "LATERAL"],
      ["patient00002", "patient00002/study1", "train", "PA"],
      ["patient00002", "patient00002/study2", "train", "AP"],
      ["patient00003", "patient00003/study1", "train", "AP"],
      ["patient64541", "patient64541/study1", "valid", "AP"],
      ["patient64542", "patient64542/study1", "valid", "PA"],
    ]);
    expect(result.records.map((record) => record.frontal)).toEqual([
      true,
      false,
      true,
      true,
      true,
      true,
      true,
    ]);
    const third = result.records[2];
    expect(third.labels).toMatchObject({
      "No Finding": null,
      Cardiomegaly: -1,
      "Lung Opacity": 1,
      Edema: -1,
      Fracture: 1,
      "Support Devices": null,
    });
    expect(result.records[0].labels).toMatchObject({
      "No Finding": 1,
      Pneumothorax: 0,
      "Support Devices": 1,
    });
    expect(result.records[0].source).toEqual({
      file: join(dataset, "train.csv"),
      row: 2,
      imageColumn: "Path",
    });
  });

  it("resolves Stanford's paths against the folder above the dataset", () => {
    expect(result.records[0].imagePath).toBe(join(dataset, "train/patient00001/study1/view1_frontal.jpg"));
  });

  it("takes race from the demographics table and fills in an unknown sex", () => {
    expect(result.records.map((record) => record.race)).toEqual([
      "WHITE",
      "WHITE",
      "BLACK",
      "BLACK",
      "HISPANIC",
      "ASIAN",
      null,
    ]);
    // patient00003 is "Unknown" in train.csv and Female in the demographics table.
    expect(result.records[4]).toMatchObject({ sex: "female", age: 41 });
    expect(result.records[2]).toMatchObject({ sex: "male", age: 87 });
    expect(loadChexpert(dataset).records.every((record) => record.race === null)).toBe(true);
  });

  it("finds the images when the CSV paths are relative to the CSV's folder or the folder was renamed", () => {
    const renamed = join(scratch, "renamed-dataset");
    cpSync(dataset, renamed, { recursive: true });
    const renamedRecords = loadChexpert(renamed).records;
    expect(renamedRecords[0].imagePath).toBe(join(renamed, "train/patient00001/study1/view1_frontal.jpg"));

    const csvOnly = join(scratch, "CheXpert-v1.0-small");
    mkdirSync(csvOnly);
    cpSync(join(dataset, "valid.csv"), join(csvOnly, "valid.csv"));
    // No image to probe: the path starts with the CSV folder's name, so it is taken relative to its parent.
    expect(loadChexpert(csvOnly).records[0].imagePath).toBe(
      join(scratch, "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg"),
    );
    expect(loadChexpert(csvOnly, { imageRoot: "/data/x" }).records[0].imagePath).toBe(
      "/data/x/CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg",
    );
  });

  it("says which files it looked for when the folder has no CSV", () => {
    expect(() => loadChexpert(scratch)).toThrow(
      /no CheXpert CSV in .* \(looked for train.csv, valid.csv, test.csv\)/,
    );
  });
});

describe("loadChexpert on the phantom's columns", () => {
  it("reads Race, Institution and Prompt and test.csv", () => {
    const folder = join(scratch, "phantom");
    mkdirSync(folder);
    const prompt = "61 year old ASIAN female. Moderate cardiomegaly.";
    writeFileSync(
      join(folder, "test.csv"),
      `${HEADER}\ntest/patient00007/study1/view1_frontal.png,Female,61,Frontal,PA,${BLANK_LABELS},asian,Hospital B,"${prompt}"\n`,
    );
    const [record] = loadChexpert(folder).records;
    expect(record).toMatchObject({
      split: "test",
      race: "ASIAN",
      institution: "Hospital B",
      prompt,
      imagePath: join(folder, "test/patient00007/study1/view1_frontal.png"),
    });
  });
});

describe("loadChexpert on bad input", () => {
  const badCsv = join(badFolder, "train.csv");

  it("skip mode: drops each bad row, reports file, row and column, and counts them", () => {
    const result = loadChexpert(badCsv, { onError: "skip" });
    expect(result.records.map((record) => record.patientId)).toEqual([
      "patient00010",
      "patient00011",
      "patient00012",
      "patient00018",
    ]);
    expect(result.records.map((record) => [record.race, record.institution])).toEqual([
      ["WHITE", "Stanford"],
      ["BLACK", "Stanford"],
      ["ASIAN", "Stanford"],
      ["BLACK", "Stanford"],
    ]);
    expect(result.issues.map((issue) => [issue.kind, issue.file, issue.row, issue.column])).toEqual([
      ["malformed-row", badCsv, 5, null],
      ["unknown-label-value", badCsv, 6, "Cardiomegaly"],
      ["age-out-of-range", badCsv, 7, "Age"],
      ["invalid-value", badCsv, 8, "Race"],
      ["invalid-value", badCsv, 9, "Sex"],
      ["malformed-row", badCsv, 10, "Path"],
    ]);
    expect(result.issues[1].message).toBe('unknown label value "2.0" (expected 1.0, 0.0, -1.0 or blank)');
    expect(result.issues[2].message).toBe("age 130 is outside 0-120 years");
    expect(result.skipped).toBe(6);
  });

  it("fail mode: throws the first problem with its file and row", () => {
    expect(() => loadChexpert(badCsv, { onError: "fail" })).toThrow(
      `${badCsv}:5: expected 21 fields as in the header, found 22`,
    );
  });

  const good = `a/patient1/study1/view1_frontal.png,Female,50,Frontal,PA,1.0${",".repeat(13)},WHITE,Site,`;
  const cases: { name: string; row: string; kind: string; column: string | null; message: string }[] = [
    {
      name: "a row with too few fields",
      row: "a/patient2/study1/view1_frontal.png,Female,50",
      kind: "malformed-row",
      column: null,
      message: "expected 22 fields as in the header, found 3",
    },
    {
      name: "an unknown label value",
      row: `a/patient2/study1/view1_frontal.png,Female,50,Frontal,PA,yes${",".repeat(13)},WHITE,Site,`,
      kind: "unknown-label-value",
      column: "No Finding",
      message: 'unknown label value "yes" (expected 1.0, 0.0, -1.0 or blank)',
    },
    {
      name: "a negative age",
      row: `a/patient2/study1/view1_frontal.png,Female,-3,Frontal,PA,1.0${",".repeat(13)},WHITE,Site,`,
      kind: "age-out-of-range",
      column: "Age",
      message: "age -3 is outside 0-120 years",
    },
    {
      name: "an age that is not a number",
      row: `a/patient2/study1/view1_frontal.png,Female,old,Frontal,PA,1.0${",".repeat(13)},WHITE,Site,`,
      kind: "invalid-value",
      column: "Age",
      message: 'age "old" is not a number',
    },
    {
      name: "an unknown view",
      row: `a/patient2/study1/view1_frontal.png,Female,50,Oblique,PA,1.0${",".repeat(13)},WHITE,Site,`,
      kind: "invalid-value",
      column: "Frontal/Lateral",
      message: 'expected Frontal or Lateral, found "Oblique"',
    },
  ];
  for (const testCase of cases) {
    it(`${testCase.name}: skipped and counted in skip mode, thrown in fail mode`, () => {
      const file = join(scratch, `${testCase.kind}-${cases.indexOf(testCase)}.csv`);
      writeFileSync(file, `${HEADER}\n${good}\n${testCase.row}\n`);
      const skipped = loadChexpert(file, { onError: "skip" });
      expect(skipped.records.map((record) => record.patientId)).toEqual(["patient1"]);
      expect(skipped.skipped).toBe(1);
      expect(skipped.issues).toEqual([
        { kind: testCase.kind, file, row: 3, column: testCase.column, message: testCase.message },
      ]);
      const column = testCase.column === null ? "" : ` column "${testCase.column}":`;
      expect(() => loadChexpert(file, { onError: "fail" })).toThrow(
        `${file}:3:${column} ${testCase.message}`,
      );
      expect(() => loadChexpert(file, { onError: "fail" })).toThrow(DataInputError);
    });
  }

  it("a missing label column: the file is skipped with the count of its rows, or the load fails", () => {
    const file = join(badFolder, "missing-column/train.csv");
    const result = loadChexpert(file, { onError: "skip" });
    expect(result.records).toEqual([]);
    expect(result.skipped).toBe(1);
    expect(result.issues).toEqual([
      {
        kind: "missing-column",
        file,
        row: 1,
        column: "Cardiomegaly",
        message: 'required column "Cardiomegaly" is missing from the header',
      },
    ]);
    expect(() => loadChexpert(file, { onError: "fail" })).toThrow(
      `${file}:1: column "Cardiomegaly": required column "Cardiomegaly" is missing from the header`,
    );
  });

  it("a missing demographics file is reported in skip mode and thrown in fail mode", () => {
    const absent = join(scratch, "no-such-demographics.csv");
    const result = loadChexpert(dataset, { onError: "skip", demographicsCsv: absent });
    expect(result.records).toHaveLength(7);
    expect(result.issues.map((issue) => [issue.kind, issue.file])).toEqual([["missing-file", absent]]);
    expect(() => loadChexpert(dataset, { demographicsCsv: absent })).toThrow(`${absent}: file not found`);
  });
});
