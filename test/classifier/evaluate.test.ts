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

function handDocument(minimumDenominator: number): EvaluationDocument {
  return evaluatePredictions(
    { predictions: handTable(), thresholds: userThresholds, thresholdsSource: "hand thresholds" },
    { minimumDenominator, bootstrapRounds: 0 },
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

  it("gives every pairwise difference of subgroups fixed by name, and each member's denominator", () => {
    const underdiagnosis = gap(document, "sex", "underdiagnosisRate");
    expect(underdiagnosis.pairs).toHaveLength(1);
    expect(underdiagnosis.pairs[0]).toMatchObject({ first: "female", second: "male" });
    expect(underdiagnosis.pairs[0].difference.value).toBeCloseTo(1 / 2 - 2 / 3, 15);
    expect(underdiagnosis.subgroups).toEqual([
      { subgroup: "female", denominator: 2, value: 0.5 },
      { subgroup: "male", denominator: 3, value: 2 / 3 },
    ]);
    expect(underdiagnosis.denominator).toBe("No Finding negatives");
    // Overdiagnosis counts No Finding positives: 2 women, 1 man.
    expect(gap(document, "sex", "overdiagnosisRate").subgroups.map((member) => member.denominator)).toEqual([
      2, 1,
    ]);
    // Per-label metrics keep their members (AUROC: the smaller class) but have no pairs.
    const noFindingAuroc = gap(document, "sex", "auroc", "No Finding");
    expect(noFindingAuroc.pairs).toEqual([]);
    expect(noFindingAuroc.subgroups).toEqual([
      { subgroup: "female", denominator: 2, value: 0.625 },
      { subgroup: "male", denominator: 1, value: 1 },
    ]);
    // Edema: every woman is positive, so the smaller class has 0 images and women are left out.
    const edema = gap(document, "sex", "auroc", "Edema");
    expect(edema.excluded).toEqual([
      { subgroup: "female", denominator: 0, reason: "0 images of the smaller class, below the minimum of 1" },
    ]);
    expect(edema.headline.gap.value).toBeNull();
    // One race only: no pairs and no headline.
    const race = gap(document, "race", "underdiagnosisRate");
    expect(race.pairs).toEqual([]);
    expect(race.headline.gap.undefinedReason).toMatch(/fewer than two race subgroups reach the minimum/);
  });

  it("leaves the headline undefined without a validation split, saying why", () => {
    const headline = gap(document, "sex", "underdiagnosisRate").headline;
    expect(headline).toMatchObject({ worst: null, best: null });
    expect(headline.gap.value).toBeNull();
    expect(headline.gap.undefinedReason).toMatch(/no validation split/);
  });

  it("admits a rate to gaps by its own denominator, not by the subgroup's image count", () => {
    const strict = handDocument(3);
    // Women have 4 images but only 2 No Finding negatives: out of underdiagnosis gaps.
    expect(subgroup(strict, "sex", "female").images).toBe(4);
    expect(subgroup(strict, "sex", "female").underdiagnosisRate.value).toBe(0.5);
    const underdiagnosis = gap(strict, "sex", "underdiagnosisRate");
    expect(underdiagnosis.subgroups.map((member) => member.subgroup)).toEqual(["male"]);
    expect(underdiagnosis.pairs).toEqual([]);
    expect(underdiagnosis.excluded).toContainEqual({
      subgroup: "female",
      denominator: 2,
      reason: "2 No Finding negatives, below the minimum of 3",
    });
    // Overdiagnosis: 2 and 1 No Finding positives, both below 3.
    expect(gap(strict, "sex", "overdiagnosisRate").excluded.map((excluded) => excluded.denominator)).toEqual([
      2, 1,
    ]);
    expect(strict.notes.join(" ")).toMatch(
      /Underdiagnosis gaps leave out subgroups with fewer than 3 No Finding negatives: sex: female \(2\)/,
    );
    const report = renderMarkdownReport(strict);
    expect(report).toContain("No dimension has two subgroups that reach the minimum denominator.");
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
        { bootstrapRounds: 40, seed, minimumDenominator: 20 },
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
    const roundValue = (estimate: { lower: number | null }) => estimate.lower; // percentile, one round
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
    // Gaps too: a pair's round is the difference of the same two named subgroups in the repeated table.
    let pairs = 0;
    for (const entry of bootstrapped.gaps) {
      for (const pair of entry.pairs) {
        const metric = entry.metric as "underdiagnosisRate" | "overdiagnosisRate" | "macroAuroc";
        const first = subgroup(direct, entry.dimension, pair.first)[metric].value;
        const second = subgroup(direct, entry.dimension, pair.second)[metric].value;
        if (first === null || second === null) continue;
        // Gaps use the symmetric interval d +- |d* - d|: with one round, one end is the round's value.
        const estimate = pair.difference;
        const round = first - second;
        expect(estimate.upper! - estimate.value!).toBeCloseTo(Math.abs(round - estimate.value!), 12);
        expect(Math.min(Math.abs(estimate.lower! - round), Math.abs(estimate.upper! - round))).toBeLessThan(
          1e-12,
        );
        pairs++;
      }
    }
    expect(pairs).toBeGreaterThan(10);
  });
});

describe("comparison with a baseline", () => {
  const table = synthesizePredictions({ images: 400, patients: 150, seed: 8 });
  const weaker = synthesizePredictions({ images: 400, patients: 150, seed: 8, separation: 1 });
  const thresholds = new Map(table.labels.map((label) => [label, 0.3] as const));
  const config = { bootstrapRounds: 30, seed: 2, minimumDenominator: 10 };

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

  it("reports candidate minus baseline for the same fixed pair, and a relative change only where it is sound", () => {
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
    let sound = 0;
    let unsound = 0;
    for (const entry of comparison.gaps.filter((candidate) => candidate.kind === "pair")) {
      const pairOf = (evaluated: EvaluationDocument) =>
        gap(evaluated, entry.dimension, entry.metric).pairs.find(
          (pair) => pair.first === entry.first && pair.second === entry.second,
        )!;
      const candidateGap = pairOf(document).difference.value!;
      const baselineGap = pairOf(baselineAlone).difference;
      expect(entry.gap.candidate).toBe(candidateGap);
      expect(entry.gap.baseline).toBe(baselineGap.value);
      expect(entry.gap.difference.value).toBeCloseTo(candidateGap - baselineGap.value!, 15);
      // The relative change needs a baseline gap whose interval excludes 0.
      const clear = baselineGap.lower! > 0 || baselineGap.upper! < 0;
      if (clear) {
        sound++;
        expect(entry.relativeChange.value).toBeCloseTo(
          (candidateGap - baselineGap.value!) / baselineGap.value!,
          12,
        );
      } else {
        unsound++;
        expect(entry.relativeChange.value).toBeNull();
        expect(entry.relativeChange.undefinedReason).toMatch(
          /interval includes 0|no interval|baseline gap is 0/,
        );
      }
    }
    expect(sound).toBeGreaterThan(0);
    expect(unsound).toBeGreaterThan(0);
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

describe("headline gap", () => {
  const predictions = synthesizePredictions({ images: 1500, patients: 600, seed: 21 });
  const validation = synthesizePredictions({ images: 900, patients: 350, seed: 22 });
  const document = evaluatePredictions(
    { predictions, validation },
    { bootstrapRounds: 50, seed: 3, minimumDenominator: 20 },
  );
  // The validation split's own subgroup values, at the same thresholds.
  const onValidation = evaluatePredictions(
    {
      predictions: validation,
      thresholds: new Map(Object.entries(document.thresholds) as [string, number][]),
    },
    { bootstrapRounds: 0, minimumDenominator: 20 },
  );

  it("takes the worst-off and best-off subgroups from the validation split and measures them here", () => {
    let checked = 0;
    for (const entry of document.gaps.filter((candidate) => candidate.label === null)) {
      if (entry.headline.worst === null) continue;
      const metric = entry.metric as "underdiagnosisRate" | "overdiagnosisRate" | "macroAuroc";
      const sign = metric === "macroAuroc" ? -1 : 1;
      const members = entry.subgroups.map((member) => member.subgroup);
      const validationValue = (name: string) =>
        subgroup(onValidation, entry.dimension, name)?.[metric].value ?? null;
      const scored = members.filter((name) => validationValue(name) !== null);
      const disadvantages = scored.map((name) => sign * validationValue(name)!);
      expect(sign * validationValue(entry.headline.worst)!).toBe(Math.max(...disadvantages));
      expect(sign * validationValue(entry.headline.best!)!).toBe(Math.min(...disadvantages));
      const here = (name: string) => subgroup(document, entry.dimension, name)[metric].value!;
      expect(entry.headline.gap.value).toBeCloseTo(
        sign * (here(entry.headline.worst) - here(entry.headline.best!)),
        15,
      );
      expect(entry.headline.gap.roundsUsed).toBe(50);
      checked++;
    }
    expect(checked).toBeGreaterThanOrEqual(4);
    const summary = renderSummary(document);
    expect(summary).toContain("## Headline gaps (worst-off minus best-off subgroup)");
    expect(summary).toMatch(
      /\| sex \| Underdiagnosis rate \| -?0\.\d{4} \(-?0\.\d{4} to -?0\.\d{4}\) \| 50\/50 \| (female - male|male - female) \|/,
    );
    expect(() => evaluationDocumentSchema.parse(document)).not.toThrow();
  });

  it("gives simultaneous bands at least as wide as each pair's own interval (more than two pairs)", () => {
    const age = gap(document, "age", "underdiagnosisRate");
    expect(age.pairs.length).toBeGreaterThan(2);
    expect(age.simultaneous).toMatchObject({
      pairs: age.pairs.length,
      roundsUsed: 50,
      undefinedReason: null,
    });
    for (const pair of age.pairs) {
      expect(pair.simultaneousLower!).toBeLessThanOrEqual(pair.difference.value!);
      expect(pair.simultaneousUpper!).toBeGreaterThanOrEqual(pair.difference.value!);
      expect(pair.simultaneousUpper! - pair.simultaneousLower!).toBeGreaterThan(
        0.8 * (pair.difference.upper! - pair.difference.lower!),
      );
    }
  });
});

describe("rounds used", () => {
  it("reports an interval as undefined, with the reason, when fewer than 95% of the rounds define it", () => {
    // Men: one patient holds the only No Finding negative, so a resample loses it in about 1/e of rounds.
    const rows: PredictionInput["rows"][number][] = [];
    const truth: number[] = [];
    const probability: number[] = [];
    for (let patient = 0; patient < 30; patient++) {
      const male = patient < 6;
      rows.push({ patientId: `p${patient}`, sex: male ? "male" : "female", age: 50, race: "WHITE" });
      truth.push(male ? (patient === 0 ? 0 : 1) : patient % 3 === 0 ? 1 : 0);
      probability.push(((patient * 7) % 10) / 10);
    }
    const document = evaluatePredictions(
      {
        predictions: createPredictionTable({
          source: "sparse",
          rows,
          labels: { "No Finding": { truth, probability } },
        }),
        thresholds: new Map([["No Finding", 0.5]]),
      },
      { bootstrapRounds: 200, seed: 1, minimumDenominator: 1 },
    );
    const men = subgroup(document, "sex", "male").underdiagnosisRate;
    expect(men.value).not.toBeNull();
    expect(men.roundsUsed).toBeLessThan(190);
    expect(men.roundsUsed).toBeGreaterThan(100);
    expect(men).toMatchObject({ lower: null, upper: null });
    expect(men.intervalUndefinedReason).toBe(
      `only ${men.roundsUsed} of 200 bootstrap rounds gave a defined value (an interval needs 190, 95%)`,
    );
    const pair = gap(document, "sex", "underdiagnosisRate").pairs[0];
    expect(pair.difference.value).not.toBeNull();
    expect(pair.difference.lower).toBeNull();
    expect(pair.difference.intervalUndefinedReason).toMatch(/^only \d+ of 200 bootstrap rounds/);
    expect(renderSummary(document)).toMatch(
      /\(interval undefined: only \d+ of 200 bootstrap rounds gave a defined value\)/,
    );
    // Women's rate is defined in every round and keeps its interval.
    const women = subgroup(document, "sex", "female").underdiagnosisRate;
    expect(women.roundsUsed).toBe(200);
    expect(women.lower).not.toBeNull();
  });
});
