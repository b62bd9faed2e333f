/**
 * Against an independent reference: test/classifier/reference.py computes AUROC with scikit-learn,
 * the F1-optimal thresholds and the confusion-matrix rates by its own code, on random prediction
 * files written here (ties, uncertain and blank truths, a single-class label, tiny subgroups,
 * boundary ages, mixed spellings). Needs /usr/bin/python3 with python3-sklearn (.ci/run installs it).
 */
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { evaluatePredictions } from "../../packages/classifier/src/evaluation/evaluate.ts";
import { readPredictionsCsv } from "../../packages/classifier/src/evaluation/predictions.ts";
import type { Estimate, EvaluationDocument } from "../../packages/classifier/src/evaluation/report-schema.ts";
import { CHEXPERT_LABELS } from "../../packages/data/src/records.ts";
import { here, type RandomCsvOptions, randomPredictionsCsv, scratchFolder } from "./helpers.ts";

const PYTHON = "/usr/bin/python3";
const TOLERANCE = 1e-9;

interface ReferenceRates {
  auroc: number | null;
  accuracy: number | null;
  truePositiveRate: number | null;
  falsePositiveRate: number | null;
  precision: number | null;
  positives: number;
  negatives: number;
}
interface Reference {
  thresholds: Record<string, number | null>;
  f1Ties: string[];
  subgroups: {
    dimension: string;
    name: string;
    images: number;
    labels: Record<string, ReferenceRates>;
    underdiagnosisRate: number | null;
    overdiagnosisRate: number | null;
  }[];
  pairs: { dimension: string; metric: string; first: string; second: string; difference: number }[];
  members: { dimension: string; metric: string; label: string; members: string[] }[];
}

function expectSame(actual: Estimate | number | null, expected: number | null, what: string): void {
  const value = actual !== null && typeof actual === "object" ? actual.value : actual;
  if (expected === null) {
    expect(value, `${what} should be undefined`).toBeNull();
    return;
  }
  expect(value, `${what} should be defined`).not.toBeNull();
  expect(Math.abs(value! - expected), `${what}: ${value} vs reference ${expected}`).toBeLessThanOrEqual(
    TOLERANCE,
  );
}

interface ReferenceCase extends RandomCsvOptions {
  minimumDenominator: number;
  validationImages: number;
  validationSeed: number;
  /** Labels whose validation F1 has its maximum at several thresholds (checked, so the tie rule is exercised). */
  f1Ties: string[];
}

const cases: ReferenceCase[] = [
  {
    seed: 1,
    images: 400,
    labels: CHEXPERT_LABELS,
    probabilitySteps: 10,
    institution: true,
    singleClassLabels: ["Fracture"],
    minimumDenominator: 20,
    validationImages: 200,
    validationSeed: 101,
    f1Ties: [],
  },
  {
    seed: 2,
    images: 250,
    labels: ["No Finding", "Edema", "Pneumothorax"],
    probabilitySteps: 1000,
    institution: false,
    lowerCaseHeader: true,
    minimumDenominator: 10,
    validationImages: 150,
    validationSeed: 102,
    f1Ties: [],
  },
  {
    seed: 3,
    images: 120,
    labels: ["No Finding", "Cardiomegaly"],
    probabilitySteps: 4,
    institution: true,
    singleClassLabels: ["Cardiomegaly"],
    minimumDenominator: 5,
    // A small validation file with coarse scores, seeded so that No Finding's best F1 is reached twice.
    validationImages: 12,
    validationSeed: 121,
    f1Ties: ["No Finding"],
  },
  {
    seed: 4,
    images: 600,
    labels: ["No Finding", "Lung Opacity", "Support Devices", "Pleural Effusion"],
    probabilitySteps: 20,
    institution: false,
    minimumDenominator: 50,
    validationImages: 10,
    validationSeed: 165,
    f1Ties: ["No Finding"],
  },
];

describe("evaluation against the scikit-learn reference", () => {
  const folder = scratchFolder("reference");

  for (const testCase of cases) {
    it(`agrees to ${TOLERANCE} on random file ${testCase.seed} (${testCase.images} images, ${testCase.labels.length} labels)`, () => {
      const predictionsPath = join(folder, `predictions-${testCase.seed}.csv`);
      const validationPath = join(folder, `validation-${testCase.seed}.csv`);
      writeFileSync(predictionsPath, randomPredictionsCsv(testCase));
      writeFileSync(
        validationPath,
        randomPredictionsCsv({
          ...testCase,
          seed: testCase.validationSeed,
          images: testCase.validationImages,
        }),
      );

      const document: EvaluationDocument = evaluatePredictions(
        { predictions: readPredictionsCsv(predictionsPath), validation: readPredictionsCsv(validationPath) },
        { bootstrapRounds: 0, minimumDenominator: testCase.minimumDenominator },
      );
      const output = execFileSync(
        PYTHON,
        [join(here, "reference.py"), predictionsPath, validationPath, String(testCase.minimumDenominator)],
        { encoding: "utf8" },
      );
      const reference = JSON.parse(output) as Reference;

      expect(reference.f1Ties).toEqual(testCase.f1Ties);
      for (const label of document.inputs.labels) {
        expectSame(document.thresholds[label], reference.thresholds[label], `threshold of ${label}`);
      }
      const overall = reference.subgroups.find((entry) => entry.dimension === "overall")!;
      for (const label of document.overall.labels) {
        const expected = overall.labels[label.label];
        expect(label.positives).toBe(expected.positives);
        expect(label.negatives).toBe(expected.negatives);
        for (const metric of [
          "auroc",
          "accuracy",
          "truePositiveRate",
          "falsePositiveRate",
          "precision",
        ] as const) {
          expectSame(label[metric], expected[metric], `${label.label} ${metric}`);
        }
      }

      const key = (entry: { dimension: string; name: string }) => `${entry.dimension}/${entry.name}`;
      expect(document.subgroups.map(key).sort()).toEqual(reference.subgroups.map(key).sort());
      for (const expected of reference.subgroups) {
        const actual = document.subgroups.find((entry) => key(entry) === key(expected))!;
        const where = key(expected);
        expect(actual.images).toBe(expected.images);
        expectSame(actual.underdiagnosisRate, expected.underdiagnosisRate, `${where} underdiagnosis`);
        expectSame(actual.overdiagnosisRate, expected.overdiagnosisRate, `${where} overdiagnosis`);
        for (const label of actual.labels) {
          const rates = expected.labels[label.label];
          expect(label.positives, `${where} ${label.label} positives`).toBe(rates.positives);
          expectSame(label.auroc, rates.auroc, `${where} ${label.label} AUROC`);
          expectSame(label.truePositiveRate, rates.truePositiveRate, `${where} ${label.label} TPR`);
          expectSame(label.falsePositiveRate, rates.falsePositiveRate, `${where} ${label.label} FPR`);
        }
      }

      // Pairwise gaps: the same pairs, the same differences (the reference orders names alphabetically).
      let compared = 0;
      for (const metric of ["underdiagnosisRate", "overdiagnosisRate"]) {
        for (const entry of document.gaps.filter((gap) => gap.metric === metric)) {
          const expected = reference.pairs.filter(
            (pair) => pair.dimension === entry.dimension && pair.metric === metric,
          );
          expect(entry.pairs.length, `${entry.dimension} ${metric} pairs`).toBe(expected.length);
          for (const pair of entry.pairs) {
            const flipped = pair.first > pair.second;
            const [first, second] = flipped ? [pair.second, pair.first] : [pair.first, pair.second];
            const match = expected.find(
              (candidate) => candidate.first === first && candidate.second === second,
            );
            expect(match, `${entry.dimension} ${metric} ${pair.first} - ${pair.second}`).toBeDefined();
            expectSame(
              pair.difference,
              flipped ? -match!.difference : match!.difference,
              `${entry.dimension} ${metric} ${pair.first} - ${pair.second}`,
            );
            compared++;
          }
        }
      }
      expect(compared).toBeGreaterThan(0);
      for (const expected of reference.members) {
        const actual = document.gaps.find(
          (gap) =>
            gap.dimension === expected.dimension && gap.metric === "auroc" && gap.label === expected.label,
        )!;
        expect(
          actual.subgroups.map((member) => member.subgroup).sort(),
          `${expected.dimension} ${expected.label}`,
        ).toEqual(expected.members);
      }
      // The files were built to contain undefined values; make sure they did.
      const undefinedAurocs = document.subgroups
        .flatMap((entry) => entry.labels)
        .filter((label) => label.auroc.value === null);
      expect(undefinedAurocs.length).toBeGreaterThan(0);
    });
  }
});
