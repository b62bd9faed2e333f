import { describe, expect, it } from "vitest";
import {
  accumulateRankedLabel,
  auroc,
  createSubgroupCounts,
  rankLabel,
  rocCurve,
} from "../../packages/classifier/src/evaluation/auroc.ts";

describe("auroc", () => {
  it("counts pairs exactly, ties as half", () => {
    // Pairs: 0.9 beats both negatives (2); 0.4 beats 0.1 (1) and ties 0.4 (0.5): 3.5 of 4.
    expect(auroc([1, 0, 1, 0], [0.9, 0.1, 0.4, 0.4])).toBe(0.875);
    expect(auroc([1, 1, 0, 0], [0.5, 0.5, 0.5, 0.5])).toBe(0.5);
    expect(auroc([1, 0], [0.2, 0.8])).toBe(0);
    expect(auroc([0, 1, 0, 1, 1], [0.1, 0.2, 0.3, 0.4, 0.5])).toBeCloseTo(5 / 6, 15);
  });

  it("leaves out uncertain (-1) and blank (-2) rows", () => {
    expect(auroc([1, 0, -1, -2, 1], [0.9, 0.1, 0.99, 0.0, 0.05])).toBe(0.5);
  });

  it("rejects truth codes and probabilities it cannot interpret", () => {
    expect(() => auroc([1, 0.5], [0.2, 0.3])).toThrow(/truth value 0.5 at row 1 is not 1, 0, -1 or blank/);
    expect(() => auroc([1, 0], [0.2, Number.NaN])).toThrow(/probability NaN at row 1 is outside \[0, 1\]/);
    expect(auroc([1, 0, Number.NaN], [0.9, 0.1, 0.5])).toBe(1);
  });

  it("is undefined (NaN), not 0.5, with one class", () => {
    expect(auroc([1, 1, 1], [0.2, 0.5, 0.9])).toBeNaN();
    expect(auroc([0, 0, -1], [0.2, 0.5, 0.9])).toBeNaN();
    expect(auroc([], [])).toBeNaN();
  });

  it("matches the brute-force pair count on random data with many ties", () => {
    let state = 7;
    const next = () => (state = (state * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    for (let trial = 0; trial < 20; trial++) {
      const size = 5 + Math.floor(next() * 200);
      const truth = Array.from({ length: size }, () => (next() < 0.4 ? 1 : 0));
      const probability = Array.from({ length: size }, () => Math.floor(next() * 6) / 5);
      let pairs = 0;
      let concordant = 0;
      for (let i = 0; i < size; i++) {
        for (let j = 0; j < size; j++) {
          if (truth[i] !== 1 || truth[j] !== 0) continue;
          pairs++;
          concordant += probability[i] > probability[j] ? 1 : probability[i] === probability[j] ? 0.5 : 0;
        }
      }
      const expected = pairs === 0 ? Number.NaN : concordant / pairs;
      expect(auroc(truth, probability)).toBeCloseTo(expected, 14);
    }
  });

  it("a weighted pass equals the pass over rows repeated by their weight", () => {
    const truth = Int8Array.from([1, 0, 1, 0, 1, 0, 0, 1]);
    const probability = Float64Array.from([0.9, 0.3, 0.3, 0.3, 0.6, 0.7, 0.1, 0.2]);
    const patient = Int32Array.from([0, 1, 2, 3, 4, 5, 6, 7]);
    const weights = Uint8Array.from([2, 0, 3, 1, 1, 4, 0, 2]);
    const ranked = rankLabel(truth, probability, patient, new Uint16Array(8), 1, 1, 0.5);
    const counts = createSubgroupCounts(1);
    accumulateRankedLabel(ranked, weights, counts);

    const repeatedTruth: number[] = [];
    const repeatedProbability: number[] = [];
    weights.forEach((weight, row) => {
      for (let copy = 0; copy < weight; copy++) {
        repeatedTruth.push(truth[row]);
        repeatedProbability.push(probability[row]);
      }
    });
    expect(counts.concordantPairs[0] / (counts.positives[0] * counts.negatives[0])).toBeCloseTo(
      auroc(repeatedTruth, repeatedProbability),
      15,
    );
    // Below the threshold 0.5: positives 0.3 (x3) and 0.2 (x2); negatives 0.3 (x1).
    expect(counts.positivesBelowThreshold[0]).toBe(5);
    expect(counts.negativesBelowThreshold[0]).toBe(1);
    expect(counts.positives[0]).toBe(2 + 3 + 1 + 2);
    expect(counts.negatives[0]).toBe(1 + 4);
  });

  it("keeps subgroups apart: each subgroup's AUROC uses only its own pairs", () => {
    // Subgroup 1 (first dimension value 1) is perfectly ranked; subgroup 2 is perfectly inverted.
    const truth = Int8Array.from([1, 0, 1, 0]);
    const probability = Float64Array.from([0.9, 0.1, 0.2, 0.8]);
    // Two dimensions: overall (id 0) and one split into ids 1 and 2.
    const membership = Uint16Array.from([0, 1, 0, 1, 0, 2, 0, 2]);
    const ranked = rankLabel(truth, probability, Int32Array.from([0, 1, 2, 3]), membership, 2, 3, null);
    const counts = createSubgroupCounts(3);
    accumulateRankedLabel(ranked, Uint8Array.from([1, 1, 1, 1]), counts);
    const value = (group: number) =>
      counts.concordantPairs[group] / (counts.positives[group] * counts.negatives[group]);
    expect(value(1)).toBe(1);
    expect(value(2)).toBe(0);
    // Overall: 0.9 beats 0.1 and 0.8, 0.2 beats 0.1, 0.2 loses to 0.8: 3 of 4 pairs.
    expect(value(0)).toBe(0.75);
  });

  it("draws the ROC curve from (0,0) to (1,1) with one point per distinct score", () => {
    const ranked = rankLabel(
      Int8Array.from([1, 0, 1, 0]),
      Float64Array.from([0.9, 0.1, 0.4, 0.4]),
      new Int32Array(4),
      new Uint16Array(4),
      1,
      1,
      null,
    );
    expect(rocCurve(ranked)).toEqual({
      falsePositiveRate: [0, 0, 0.5, 1],
      truePositiveRate: [0, 0.5, 1, 1],
    });
  });
});
