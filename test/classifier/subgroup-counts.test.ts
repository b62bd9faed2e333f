/**
 * A subgroup whose rows of one label are all uncertain or blank has no known truth for that label:
 * 0 positives, 0 negatives, every rate undefined, whatever the labels before it counted there. (The
 * per-label counts share one scratch buffer; before the fix such a subgroup kept the previous
 * label's counts. Found when the test files' generator changed and the scikit-learn reference
 * disagreed.)
 */
import { describe, expect, it } from "vitest";
import { evaluatePredictions } from "../../packages/classifier/src/evaluation/evaluate.ts";
import { createPredictionTable } from "../../packages/classifier/src/evaluation/predictions.ts";

describe("subgroups without a known truth for a label", () => {
  it("report no positives or negatives, not the previous label's", () => {
    const white = { sex: "female" as const, age: 30, race: "WHITE" as const };
    const table = createPredictionTable({
      source: "stale counts",
      rows: [
        { patientId: "a", ...white },
        { patientId: "b", ...white },
        { patientId: "c", ...white },
        { patientId: "h", sex: "male", age: 10, race: "HISPANIC" },
      ],
      labels: {
        Edema: { truth: [1, 0, 1, 1], probability: [0.9, 0.2, 0.6, 0.8] },
        Fracture: { truth: [0, 1, 0, -1], probability: [0.1, 0.7, 0.4, 0.9] },
        Pneumothorax: { truth: [1, 0, 0, null], probability: [0.8, 0.3, 0.2, 0.9] },
      },
    });
    const document = evaluatePredictions(
      {
        predictions: table,
        thresholds: new Map([
          ["Edema", 0.5],
          ["Fracture", 0.5],
          ["Pneumothorax", 0.5],
        ]),
      },
      { minimumDenominator: 1, bootstrapRounds: 0 },
    );
    const hispanic = document.subgroups.find(
      (entry) => entry.dimension === "race" && entry.name === "HISPANIC",
    );
    expect(hispanic).toBeDefined();
    const byLabel = new Map(hispanic!.labels.map((label) => [label.label, label]));
    expect(byLabel.get("Edema")!.positives).toBe(1);
    for (const name of ["Fracture", "Pneumothorax"]) {
      const label = byLabel.get(name)!;
      expect([label.positives, label.negatives], name).toEqual([0, 0]);
      expect(label.auroc.value, name).toBeNull();
      expect(label.truePositiveRate.value, name).toBeNull();
      expect(label.falsePositiveRate.value, name).toBeNull();
    }
  });
});
