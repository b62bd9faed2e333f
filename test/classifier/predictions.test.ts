import { describe, expect, it } from "vitest";
import { TRUTH_BLANK, TRUTH_UNCERTAIN } from "../../packages/classifier/src/evaluation/auroc.ts";
import {
  createPredictionTable,
  formatPredictionsCsv,
  parsePredictionsCsv,
} from "../../packages/classifier/src/evaluation/predictions.ts";
import { csv } from "./helpers.ts";

const header = [
  "patient_id",
  "sex",
  "age",
  "race",
  "No Finding_true",
  "No Finding_prob",
  "Edema_true",
  "Edema_prob",
];
const goodRow = ["p1", "F", "54", "black", "1", "0.8", "", "0.1"];
const parse = (rows: (string | number)[][]) => parsePredictionsCsv(csv(rows), "preds.csv");

describe("predictions CSV", () => {
  it("reads demographics, truth codes and probabilities, and lists missing labels", () => {
    const table = parse([header, goodRow, ["p2", "male", "80", "WHITE", "-1.0", "0", "0.0", "1"]]);
    expect(table.labels).toEqual(["No Finding", "Edema"]);
    expect(table.missingLabels).toHaveLength(12);
    expect(table.missingLabels).toContain("Cardiomegaly");
    expect(table.rows[0]).toMatchObject({
      patientId: "p1",
      sex: "female",
      age: 54,
      ageBin: "40-60",
      race: "BLACK",
    });
    expect(table.rows[1]).toMatchObject({ sex: "male", ageBin: "80+", race: "WHITE", institution: null });
    expect([...table.truth[0]]).toEqual([1, TRUTH_UNCERTAIN]);
    expect([...table.truth[1]]).toEqual([TRUTH_BLANK, 0]);
    expect([...table.probability[1]]).toEqual([0.1, 1]);
  });

  it("accepts column names in any case, with spaces around them, and ignores extra columns", () => {
    const table = parse([
      [" PATIENT_ID", "Sex", "AGE", "Race", "Institution", "Path", "no finding_TRUE", "NO FINDING_prob"],
      ["p1", "f", "3", "Asian", "site-a", "x.jpg", "0", "0.5"],
    ]);
    expect(table.labels).toEqual(["No Finding"]);
    expect(table.rows[0]).toMatchObject({ institution: "site-a", race: "ASIAN", ageBin: "0-20" });
    expect(table.ignoredColumns).toEqual(["Path"]);
  });

  it("round-trips through formatPredictionsCsv", () => {
    const table = parse([header, goodRow, ["p2", "male", "80", "WHITE", "-1", "0", "0", "1"]]);
    const again = parsePredictionsCsv(formatPredictionsCsv(table), "again.csv");
    expect(again.rows).toEqual(table.rows);
    expect(again.truth).toEqual(table.truth);
    expect(again.probability).toEqual(table.probability);
  });

  const bad: [string, (string | number)[][], RegExp][] = [
    [
      "a missing column",
      [header.filter((name) => name !== "race"), ["p1", "F", "54", "1", "0.8", "", "0.1"]],
      /preds\.csv: missing column "race" \(header has: patient_id, sex, age, No Finding_true/,
    ],
    [
      "a misnamed label column",
      [
        [...header, "Edemaa_prob"],
        [...goodRow, "0.3"],
      ],
      /column "Edemaa_prob" does not name a CheXpert label/,
    ],
    [
      "half a label",
      [header.slice(0, 7), goodRow.slice(0, 7)],
      /label "Edema" has one column but not "Edema_prob"; each/,
    ],
    [
      "a misspelled half of a label",
      [[...header.slice(0, 7), "Edma_prob"], goodRow],
      /label "Edema" has one column but not "Edema_prob" \(misspelled as "Edma_prob"\?\)/,
    ],
    ["no label columns", [header.slice(0, 4), goodRow.slice(0, 4)], /no label columns found/],
    [
      "a probability above 1",
      [header, ["p1", "F", "54", "BLACK", "1", "1.2", "", "0.1"]],
      /preds\.csv row 2, column "No Finding_prob": probability 1\.2 is outside \[0, 1\]/,
    ],
    [
      "a negative probability",
      [header, goodRow, ["p1", "F", "54", "BLACK", "1", "-0.1", "", "0.1"]],
      /row 3, column "No Finding_prob": probability -0\.1 is outside/,
    ],
    [
      "NaN",
      [header, ["p1", "F", "54", "BLACK", "1", "NaN", "", "0.1"]],
      /row 2, column "No Finding_prob": probability "NaN" is not a number/,
    ],
    [
      "a blank probability",
      [header, ["p1", "F", "54", "BLACK", "1", "", "", "0.1"]],
      /row 2, column "No Finding_prob": probability is blank/,
    ],
    [
      "a bad truth value",
      [header, ["p1", "F", "54", "BLACK", "2", "0.5", "", "0.1"]],
      /row 2, column "No Finding_true": true value "2" must be 1, 0, -1 \(uncertain\) or blank/,
    ],
    [
      "an unknown race",
      [header, ["p1", "F", "54", "Martian", "1", "0.5", "", "0.1"]],
      /row 2, column "race": unknown race "Martian" \(expected one of WHITE, BLACK, ASIAN, HISPANIC\)/,
    ],
    [
      "an unknown sex",
      [header, ["p1", "X", "54", "WHITE", "1", "0.5", "", "0.1"]],
      /row 2, column "sex": unknown sex "X"/,
    ],
    [
      "a bad age",
      [header, ["p1", "F", "old", "WHITE", "1", "0.5", "", "0.1"]],
      /row 2, column "age": age "old" is not a number/,
    ],
    [
      "a blank patient",
      [header, ["", "F", "50", "WHITE", "1", "0.5", "", "0.1"]],
      /row 2, column "patient_id": patient id is blank/,
    ],
    ["a short row", [header, ["p1", "F", "50"]], /row 2: 3 fields, but the header has 8/],
    [
      "a repeated column",
      [
        [...header, "sex"],
        [...goodRow, "F"],
      ],
      /column "sex" appears twice/,
    ],
    ["no rows", [header], /no data rows/],
  ];
  for (const [what, rows, message] of bad) {
    it(`rejects ${what}, naming where`, () => {
      expect(() => parse(rows)).toThrow(message);
    });
  }

  it("rejects an empty file", () => {
    expect(() => parsePredictionsCsv("", "empty.csv")).toThrow(/empty\.csv: the file is empty/);
  });

  it("validates tables built in memory the same way", () => {
    const rows = [{ patientId: "p1", sex: "female" as const, age: 40, race: "ASIAN" as const }];
    expect(
      createPredictionTable({ source: "mem", rows, labels: { Edema: { truth: [1], probability: [0.4] } } })
        .labels,
    ).toEqual(["Edema"]);
    expect(() =>
      createPredictionTable({
        source: "mem",
        rows,
        labels: { Edema: { truth: [1], probability: [Number.NaN] } },
      }),
    ).toThrow(/mem row 0, label "Edema": probability NaN is outside \[0, 1\]/);
    expect(() =>
      createPredictionTable({
        source: "mem",
        rows,
        labels: { Edema: { truth: [1, 0], probability: [0.1, 0.2] } },
      }),
    ).toThrow(/2 truth values and 2 probabilities for 1 rows/);
  });
});
