import { describe, expect, it } from "vitest";
import { bootstrapStream, resamplePatients } from "../../packages/classifier/src/evaluation/bootstrap.ts";
import { evaluatePredictions } from "../../packages/classifier/src/evaluation/evaluate.ts";
import {
  createPredictionTable,
  type PredictionInput,
  type PredictionTable,
} from "../../packages/classifier/src/evaluation/predictions.ts";
import { renderMarkdownReport, renderSummary } from "../../packages/classifier/src/evaluation/report.ts";
import {
  type EvaluationDocument,
  evaluationDocumentSchema,
} from "../../packages/classifier/src/evaluation/report-schema.ts";
import { synthesizePredictions } from "../../packages/classifier/src/evaluation/synthetic.ts";

/**
 * Eight images worked by hand. No Finding, threshold 0.5:
 *   female, 30: NF=0 p.7 (underdiagnosed), NF=0 p.4, NF=1 p.8, NF=1 p.4 (overdiagnosed)
 *   male, 50:   NF=0 p.6 (under), NF=0 p.6 (under), NF=0 p.1, NF=1 p.9
 * Edema: every female image is positive, so Edema's AUROC is undefined for women.
 */
function handTable(): PredictionTable {
  const female = { sex: "female" as const, age: 30, race: "WHITE" as const };
  const male = { sex: "male" as const, age: 50, race: "WHITE" as const };
  const rows: PredictionInput["rows"] = [
    { patientId: "a", ...female },
    { patientId: "b", ...female },
    { patientId: "c", ...female },
    { patientId: "d", ...female },
    { patientId: "e", ...male },
    { patientId: "f", ...male },
    { patientId: "g", ...male },
    { patientId: "h", ...male },
  ];
  return createPredictionTable({
    source: "hand",
    rows,
    labels: {
      "No Finding": {
        truth: [0, 0, 1, 1, 0, 0, 0, 1],
        probability: [0.7, 0.4, 0.8, 0.4, 0.6, 0.6, 0.1, 0.9],
      },
      Edema: { truth: [1, 1, 1, 1, 0, 1, 0, null], probability: [0.9, 0.2, 0.5, 0.5, 0.3, 0.8, 0.6, 0.5] },
    },
  });
}

const userThresholds = new Map([
  ["No Finding", 0.5],
  ["Edema", 0.5],
]);

function handDocument(minimumSubgroupSize: number): EvaluationDocument {
  return evaluatePredictions(
    { predictions: handTable(), thresholds: userThresholds, thresholdsSource: "hand thresholds" },
    { minimumSubgroupSize, bootstrapRounds: 0 },
  );
}

const subgroup = (document: EvaluationDocument, dimension: string, name: string) =>
  document.subgroups.find((entry) => entry.dimension === dimension && entry.name === name)!;
const gap = (document: EvaluationDocument, dimension: string, metric: string, label: string | null = null) =>
  document.gaps.find(
    (entry) => entry.dimension === dimension && entry.metric === metric && entry.label === label,
  )!;

describe("evaluatePredictions on a hand-worked table", () => {
  const document = handDocument(1);

  it("computes overall AUROC, rates and precision at the threshold", () => {
    const noFinding = document.overall.labels[0];
    // Positives .8 .4 .9 vs negatives .7 .4 .6 .6 .1: 5 + (2 + 0.5 tie) ... = 11.5 of 15.
    expect(noFinding.auroc.value).toBeCloseTo(11.5 / 15, 15);
    expect(noFinding.truePositiveRate.value).toBeCloseTo(2 / 3, 15);
    expect(noFinding.falsePositiveRate.value).toBeCloseTo(3 / 5, 15);
    expect(noFinding.precision.value).toBeCloseTo(2 / 5, 15);
    expect(noFinding.accuracy.value).toBeCloseTo(4 / 8, 15);
    expect(document.overall.underdiagnosisRate.value).toBeCloseTo(3 / 5, 15);
    expect(document.overall.overdiagnosisRate.value).toBeCloseTo(1 / 3, 15);
  });

  it("computes subgroup AUROC and under/overdiagnosis rates", () => {
    const women = subgroup(document, "sex", "female");
    const men = subgroup(document, "sex", "male");
    expect(women.images).toBe(4);
    expect(women.patients).toBe(4);
    // Women: .8 beats .7 and .4; .4 loses to .7 and ties .4: 2.5 of 4.
    expect(women.labels[0].auroc.value).toBe(0.625);
    expect(men.labels[0].auroc.value).toBe(1);
    expect(women.underdiagnosisRate.value).toBe(0.5);
    expect(men.underdiagnosisRate.value).toBeCloseTo(2 / 3, 15);
    expect(women.overdiagnosisRate.value).toBe(0.5);
    expect(men.overdiagnosisRate.value).toBe(0);
    expect(subgroup(document, "sex x age", "female & 20-40").images).toBe(4);
    expect(subgroup(document, "race x age", "WHITE & 40-60").underdiagnosisRate.value).toBeCloseTo(2 / 3, 15);
  });

  it("reports a one-class subgroup's AUROC as undefined, with the reason, never 0.5", () => {
    const womenEdema = subgroup(document, "sex", "female").labels[1];
    expect(womenEdema.auroc.value).toBeNull();
    expect(womenEdema.auroc.undefinedReason).toBe("one class only, no negatives (Edema in female)");
    expect(subgroup(document, "sex", "female").macroAuroc.value).toBeNull();
    expect(subgroup(document, "sex", "female").macroAuroc.undefinedReason).toMatch(
      /AUROC undefined for Edema/,
    );
    const report = renderMarkdownReport(document);
    expect(report).toContain("undefined: AUROC undefined for Edema");
    expect(report).not.toMatch(/\| female \|[^\n]*0\.5000/);
  });

  it("names the subgroups at both ends of each gap", () => {
    const underdiagnosis = gap(document, "sex", "underdiagnosisRate");
    expect(underdiagnosis.gap.value).toBeCloseTo(2 / 3 - 1 / 2, 15);
    expect(underdiagnosis.highest).toEqual({ subgroup: "male", value: 2 / 3 });
    expect(underdiagnosis.lowest).toEqual({ subgroup: "female", value: 0.5 });
    expect(gap(document, "sex", "auroc", "No Finding").gap.value).toBe(0.375);
    // Edema AUROC is undefined for women: the gap has only one member and is undefined.
    const edema = gap(document, "sex", "auroc", "Edema");
    expect(edema.gap.value).toBeNull();
    expect(edema.excluded).toEqual([{ subgroup: "female", reason: "value undefined" }]);
    // One race only: no race gap.
    expect(gap(document, "race", "underdiagnosisRate").gap.undefinedReason).toMatch(
      /fewer than two eligible/,
    );
  });

  it("keeps subgroups below the minimum size out of gaps but still lists them", () => {
    const strict = handDocument(5);
    expect(subgroup(strict, "sex", "female").inGaps).toBe(false);
    expect(subgroup(strict, "sex", "female").underdiagnosisRate.value).toBe(0.5);
    const underdiagnosis = gap(strict, "sex", "underdiagnosisRate");
    expect(underdiagnosis.gap.value).toBeNull();
    expect(underdiagnosis.excluded).toContainEqual({
      subgroup: "female",
      reason: "4 images, below the minimum of 5",
    });
    expect(strict.notes.join(" ")).toMatch(/fewer than 5 images and are kept out of gaps: female \(4\)/);
  });

  it("records where thresholds came from and produces a schema-valid document", () => {
    expect(document.thresholds).toEqual({ "No Finding": 0.5, Edema: 0.5 });
    expect(document.thresholdDetails[0].source).toBe("user");
    expect(document.inputs.thresholdsFile).toBe("hand thresholds");
    expect(() => evaluationDocumentSchema.parse(document)).not.toThrow();
  });
});

describe("thresholds", () => {
  it("fits F1-optimal thresholds on the validation table, not on the evaluated one", () => {
    const validation = handTable();
    const predictions = createPredictionTable({
      source: "other",
      rows: validation.rows.map((row) => ({ ...row })),
      labels: {
        "No Finding": {
          truth: [0, 0, 1, 1, 0, 0, 0, 1],
          probability: [0.1, 0.1, 0.2, 0.2, 0.1, 0.1, 0.1, 0.2],
        },
        Edema: { truth: [1, 0, 1, 0, 0, 1, 0, 1], probability: [0.9, 0.2, 0.5, 0.5, 0.3, 0.8, 0.6, 0.5] },
      },
    });
    const document = evaluatePredictions({ predictions, validation }, { bootstrapRounds: 0 });
    // On the hand table, No Finding F1 by threshold: .9 -> 2/4, .8 -> 4/5, .7 -> 4/6, .6 -> 4/8, .4 -> 6/10 ...
    expect(document.thresholds["No Finding"]).toBe(0.8);
    expect(document.thresholdDetails[0]).toMatchObject({ source: "validation", f1: 0.8 });
    expect(document.overall.labels[0].truePositiveRate.value).toBe(0);
  });

  it("falls back to the evaluated predictions with a note, and refuses both sources at once", () => {
    const document = evaluatePredictions({ predictions: handTable() }, { bootstrapRounds: 0 });
    expect(document.thresholdDetails.every((detail) => detail.source === "predictions")).toBe(true);
    expect(document.notes.join(" ")).toMatch(/optimistic/);
    expect(() =>
      evaluatePredictions({ predictions: handTable(), validation: handTable(), thresholds: userThresholds }),
    ).toThrow(/either validation predictions or thresholds/);
    expect(() =>
      evaluatePredictions({
        predictions: handTable(),
        thresholds: new Map([["No Finding", 0.5]]),
        thresholdsSource: "t.json",
      }),
    ).toThrow(/t\.json: no threshold for label "Edema"/);
  });
});

describe("patient-level bootstrap", () => {
  const table = synthesizePredictions({ images: 600, patients: 200, seed: 5, institutions: ["x", "y"] });
  const thresholds = new Map(table.labels.map((label) => [label, 0.3] as const));

  it("is reproducible for a seed and changes with the seed", () => {
    const run = (seed: number) =>
      evaluatePredictions(
        { predictions: table, thresholds },
        { bootstrapRounds: 40, seed, minimumSubgroupSize: 20 },
      );
    const first = run(3);
    expect(run(3)).toEqual(first);
    const other = run(4);
    expect(other.overall.macroAuroc.value).toBe(first.overall.macroAuroc.value);
    expect(other.overall.macroAuroc.lower).not.toBe(first.overall.macroAuroc.lower);
    const macro = first.overall.macroAuroc;
    expect(macro.roundsUsed).toBe(40);
    expect(macro.lower!).toBeLessThan(macro.value!);
    expect(macro.upper!).toBeGreaterThan(macro.value!);
  });

  it("each round equals the point estimate of the table with every patient repeated by its draw count", () => {
    const seed = 11;
    const bootstrapped = evaluatePredictions(
      { predictions: table, thresholds },
      { bootstrapRounds: 1, seed },
    );
    // With one round, the interval's ends are that round's value.
    const patientIds = [...new Set(table.rows.map((row) => row.patientId))];
    const weights = new Uint8Array(patientIds.length);
    resamplePatients(bootstrapStream(seed), weights);
    const weightOf = new Map(patientIds.map((id, index) => [id, weights[index]]));
    const keep: number[] = [];
    table.rows.forEach((row, index) => {
      for (let copy = 0; copy < weightOf.get(row.patientId)!; copy++) keep.push(index);
    });
    const repeated = createPredictionTable({
      source: "repeated",
      rows: keep.map((index) => table.rows[index]),
      labels: Object.fromEntries(
        table.labels.map((label, labelIndex) => [
          label,
          {
            truth: keep.map((index) => {
              const code = table.truth[labelIndex][index];
              return code === -2 ? null : code;
            }),
            probability: keep.map((index) => table.probability[labelIndex][index]),
          },
        ]),
      ),
    });
    const direct = evaluatePredictions({ predictions: repeated, thresholds }, { bootstrapRounds: 0 });
    const roundValue = (estimate: { lower: number | null }) => estimate.lower;
    bootstrapped.overall.labels.forEach((label, labelIndex) => {
      const expected = direct.overall.labels[labelIndex];
      for (const metric of [
        "auroc",
        "accuracy",
        "truePositiveRate",
        "falsePositiveRate",
        "precision",
      ] as const) {
        if (expected[metric].value === null) continue;
        expect(roundValue(label[metric])).toBeCloseTo(expected[metric].value!, 12);
      }
    });
    for (const entry of direct.subgroups) {
      const original = subgroup(bootstrapped, entry.dimension, entry.name);
      if (entry.underdiagnosisRate.value !== null) {
        expect(roundValue(original.underdiagnosisRate)).toBeCloseTo(entry.underdiagnosisRate.value, 12);
      }
      entry.labels.forEach((label, labelIndex) => {
        if (label.auroc.value !== null)
          expect(roundValue(original.labels[labelIndex].auroc)).toBeCloseTo(label.auroc.value, 12);
      });
    }
  });
});

describe("comparison with a baseline", () => {
  const table = synthesizePredictions({ images: 400, patients: 150, seed: 8 });
  const weaker = synthesizePredictions({ images: 400, patients: 150, seed: 8, separation: 1 });
  const thresholds = new Map(table.labels.map((label) => [label, 0.3] as const));
  const config = { bootstrapRounds: 30, seed: 2, minimumSubgroupSize: 10 };

  it("gives zero differences with zero-width intervals against itself", () => {
    const document = evaluatePredictions(
      { predictions: table, thresholds, baseline: { predictions: table, thresholds } },
      config,
    );
    const comparison = document.comparison!;
    expect(comparison.macroAuroc.difference).toMatchObject({ value: 0, lower: 0, upper: 0 });
    for (const entry of comparison.gaps) {
      if (entry.gap.difference.value === null) continue;
      expect(entry.gap.difference.value).toBe(0);
      // Tiny subgroups can leave a gap undefined in every round; otherwise the interval is [0, 0].
      if (entry.gap.difference.roundsUsed > 0)
        expect(entry.gap.difference).toMatchObject({ lower: 0, upper: 0 });
      if (entry.relativeChange.value !== null) expect(entry.relativeChange.value).toBe(0);
    }
  });

  it("reports candidate minus baseline and the relative gap change", () => {
    const document = evaluatePredictions(
      { predictions: table, thresholds, baseline: { predictions: weaker, thresholds } },
      config,
    );
    const baselineAlone = evaluatePredictions({ predictions: weaker, thresholds }, config);
    const comparison = document.comparison!;
    expect(comparison.macroAuroc.baseline).toBe(baselineAlone.overall.macroAuroc.value);
    expect(comparison.macroAuroc.difference.value).toBeCloseTo(
      document.overall.macroAuroc.value! - baselineAlone.overall.macroAuroc.value!,
      15,
    );
    expect(comparison.macroAuroc.difference.value!).toBeGreaterThan(0);
    const sexGap = comparison.gaps.find(
      (entry) => entry.dimension === "sex" && entry.metric === "underdiagnosisRate",
    )!;
    const candidateGap = gap(document, "sex", "underdiagnosisRate").gap.value!;
    const baselineGap = gap(baselineAlone, "sex", "underdiagnosisRate").gap.value!;
    expect(sexGap.gap.candidate).toBe(candidateGap);
    expect(sexGap.gap.baseline).toBe(baselineGap);
    expect(sexGap.relativeChange.value).toBeCloseTo((candidateGap - baselineGap) / baselineGap, 15);
    expect(renderSummary(document)).toContain("## Comparison with baseline");
    expect(() => evaluationDocumentSchema.parse(document)).not.toThrow();
  });

  it("matches rows by image_id when both files have one", () => {
    const order = table.rows.map((_, index) => index).reverse();
    const shuffled = createPredictionTable({
      source: "shuffled",
      rows: order.map((index) => table.rows[index]),
      labels: Object.fromEntries(
        table.labels.map((label, labelIndex) => [
          label,
          {
            truth: order.map((index) =>
              table.truth[labelIndex][index] === -2 ? null : table.truth[labelIndex][index],
            ),
            probability: order.map((index) => table.probability[labelIndex][index]),
          },
        ]),
      ),
    });
    const document = evaluatePredictions(
      { predictions: table, thresholds, baseline: { predictions: shuffled, thresholds } },
      config,
    );
    expect(document.comparison!.macroAuroc.difference).toMatchObject({ value: 0, lower: 0, upper: 0 });
  });

  it("rejects a baseline that does not describe the same images, naming row and column", () => {
    const withRows = (
      change: (rows: PredictionInput["rows"][number][]) => void,
      rowCount = 400,
    ): PredictionTable => {
      const rows = table.rows.slice(0, rowCount).map((row) => ({ ...row, imageId: null }));
      change(rows);
      return createPredictionTable({
        source: "baseline.csv",
        rows,
        labels: Object.fromEntries(
          table.labels.map((label, labelIndex) => [
            label,
            {
              truth: Array.from(table.truth[labelIndex].subarray(0, rowCount), (code) =>
                code === -2 ? null : code,
              ),
              probability: table.probability[labelIndex].subarray(0, rowCount),
            },
          ]),
        ),
      });
    };
    const candidate = { ...table, rows: table.rows.map((row) => ({ ...row, imageId: null })) };
    const compare = (baseline: PredictionTable) =>
      evaluatePredictions(
        { predictions: candidate, thresholds, baseline: { predictions: baseline, thresholds } },
        config,
      );
    expect(() =>
      compare(
        withRows((rows) => {
          rows[7] = { ...rows[7], patientId: "someone-else" };
        }),
      ),
    ).toThrow(/baseline\.csv row 7, column "patient_id": "someone-else" does not match/);
    expect(() =>
      compare(
        withRows((rows) => {
          rows[3] = { ...rows[3], race: rows[3].race === "ASIAN" ? "BLACK" : "ASIAN" };
        }),
      ),
    ).toThrow(/baseline\.csv row 3, column "race"/);
    expect(() => compare(withRows(() => {}, 399))).toThrow(/baseline\.csv: 399 rows, but .* has 400/);
  });
});
