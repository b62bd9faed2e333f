import { describe, expect, it } from "vitest";
import { assignPatientSplits, patientsInSeveralSplits } from "../../packages/data/src/pipeline/splits.ts";
import type { CxrRecord } from "../../packages/data/src/records.ts";
import { makeRecord } from "./helpers.ts";

/** 60 patients with 1 to 5 images each, in patient-interleaved order as a real CSV might list them. */
function unsplitRecords(): CxrRecord[] {
  const records: CxrRecord[] = [];
  for (let image = 0; image < 5; image++) {
    for (let patient = 0; patient < 60; patient++) {
      if (image < 1 + (patient % 5)) {
        const patientId = `patient${String(patient).padStart(3, "0")}`;
        records.push(makeRecord({ patientId, studyId: `${patientId}/study${image}` }));
      }
    }
  }
  return records;
}

const fractions = { train: 0.7, valid: 0.15, test: 0.15 };

describe("assignPatientSplits", () => {
  it("never puts one patient in two splits, and cuts at the fractions in whole patients", () => {
    const records = assignPatientSplits(unsplitRecords(), { fractions, seed: 1 });
    expect(patientsInSeveralSplits(records).size).toBe(0);
    const patientsPer = (split: string) =>
      new Set(records.filter((record) => record.split === split).map((record) => record.patientId)).size;
    expect([patientsPer("train"), patientsPer("valid"), patientsPer("test")]).toEqual([42, 9, 9]);
    expect(records.every((record) => record.split !== null)).toBe(true);
  });

  it("is deterministic in the seed and independent of record order", () => {
    const records = unsplitRecords();
    const splitOf = (list: CxrRecord[]) =>
      Object.fromEntries(list.map((record) => [record.patientId, record.split]));
    const first = splitOf(assignPatientSplits(records, { fractions, seed: 7 }));
    expect(splitOf(assignPatientSplits([...records].reverse(), { fractions, seed: 7 }))).toEqual(first);
    expect(splitOf(assignPatientSplits(records, { fractions, seed: 8 }))).not.toEqual(first);
  });

  it("keeps existing splits, and a patient's unsplit images join that patient's split", () => {
    const records = [
      makeRecord({ patientId: "a", split: "test" }),
      makeRecord({ patientId: "a", split: null }),
      makeRecord({ patientId: "b", split: null }),
    ];
    const result = assignPatientSplits(records, { fractions: { train: 1, valid: 0, test: 0 }, seed: 0 });
    expect(result.map((record) => record.split)).toEqual(["test", "test", "train"]);
    const overwritten = assignPatientSplits(records, {
      fractions: { train: 1, valid: 0, test: 0 },
      seed: 0,
      overwrite: true,
    });
    expect(overwritten.map((record) => record.split)).toEqual(["train", "train", "train"]);
  });

  it("rejects fractions that do not add up to one", () => {
    expect(() =>
      assignPatientSplits([], { fractions: { train: 0.8, valid: 0.1, test: 0.2 }, seed: 0 }),
    ).toThrow("split fractions must add up to 1, got 1.1");
  });
});

describe("patientsInSeveralSplits", () => {
  it("finds a patient whose images were split by image", () => {
    const leaks = patientsInSeveralSplits([
      makeRecord({ patientId: "a", split: "train" }),
      makeRecord({ patientId: "a", split: "test" }),
      makeRecord({ patientId: "b", split: "train" }),
    ]);
    expect([...leaks]).toEqual([["a", ["test", "train"]]]);
  });
});
