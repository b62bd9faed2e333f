import { describe, expect, it } from "vitest";
import { fitF1Threshold, parseThresholdsJson } from "../../packages/classifier/src/evaluation/thresholds.ts";
import { CHEXPERT_LABELS } from "../../packages/data/src/records.ts";

const fitThreshold = (truth: number[], probability: number[]) =>
  fitF1Threshold(Int8Array.from(truth), Float64Array.from(probability));

describe("F1-optimal threshold", () => {
  it("picks the candidate with the highest F1 (worked by hand)", () => {
    // t=0.9: F1 2/4; t=0.8: 4/5; t=0.7: 4/6; t=0.3: 4/7; t=0.2: 6/8. Best: 0.8.
    expect(fitThreshold([1, 1, 0, 0, 1], [0.9, 0.8, 0.7, 0.3, 0.2])).toEqual({ threshold: 0.8, f1: 0.8 });
  });

  it("breaks F1 ties by the lowest threshold", () => {
    // t=0.8: 2/3; t=0.6: 2/4; t=0.5: 2/5; t=0.3: 4/6 = 2/3, equal to t=0.8: the lower one wins.
    const fitted = fitThreshold([1, 0, 0, 1], [0.8, 0.6, 0.5, 0.3]);
    expect(fitted.threshold).toBe(0.3);
    expect(fitted.f1).toBeCloseTo(2 / 3, 15);
  });

  it("treats equal probabilities as one candidate, predicted positive together (>=)", () => {
    // Candidates 0.7 (TP1 FP1: F1 2/4... with P=2: 2/(2+1+1)=0.5) and 0.2 (all positive: 4/(4+2)=2/3).
    expect(fitThreshold([1, 0, 1, 0], [0.7, 0.7, 0.2, 0.2]).threshold).toBe(0.2);
  });

  it("ignores uncertain and blank rows", () => {
    expect(fitThreshold([1, -1, -2, 0], [0.6, 0.99, 0.98, 0.1])).toEqual({ threshold: 0.6, f1: 1 });
  });

  it("has no threshold without a positive row, and says why", () => {
    const fitted = fitThreshold([0, 0, -1], [0.2, 0.4, 0.9]);
    expect(fitted.threshold).toBeNull();
    expect(fitted.undefinedReason).toMatch(/no positive/);
    expect(fitThreshold([-1, -2], [0.1, 0.2]).undefinedReason).toMatch(/no row with a known/);
  });
});

describe("thresholds file", () => {
  it("reads a flat map or an evaluation.json, case-insensitively", () => {
    const flat = parseThresholdsJson('{"no finding": 0.4, "Edema": 0.25}', "t.json", CHEXPERT_LABELS);
    expect([...flat]).toEqual([
      ["No Finding", 0.4],
      ["Edema", 0.25],
    ]);
    const nested = parseThresholdsJson(
      '{"schema": "x", "thresholds": {"Edema": 0.1, "Fracture": null}}',
      "e.json",
      CHEXPERT_LABELS,
    );
    expect([...nested]).toEqual([["Edema", 0.1]]);
  });

  it("names the file and key of a bad entry", () => {
    expect(() => parseThresholdsJson('{"Edemaa": 0.4}', "t.json", CHEXPERT_LABELS)).toThrow(
      /t\.json: unknown label "Edemaa"/,
    );
    expect(() => parseThresholdsJson('{"Edema": 1.5}', "t.json", CHEXPERT_LABELS)).toThrow(
      /t\.json: threshold for "Edema" must be a number in \[0, 1\], got 1.5/,
    );
    expect(() => parseThresholdsJson('{"Edema": "0.3"}', "t.json", CHEXPERT_LABELS)).toThrow(/got "0.3"/);
    expect(() => parseThresholdsJson("[1, 2]", "t.json", CHEXPERT_LABELS)).toThrow(/expected a JSON object/);
    expect(() => parseThresholdsJson("{", "t.json", CHEXPERT_LABELS)).toThrow(/t\.json: not valid JSON/);
  });
});
