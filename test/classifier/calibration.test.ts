/**
 * Do the gap intervals mean what they say? Prediction tables are simulated with a known truth:
 * no subgroup effect at all, or a known underdiagnosis difference of 0.10 between women and men.
 * Patients have 1-3 images and a patient-level random effect on their underdiagnosis probability,
 * so images of one patient are correlated (an image-level bootstrap would be too narrow). Over 300
 * simulated tables, 95% intervals must cover the true value in at least 92% of them and the point
 * estimates must be unbiased to within 0.01. Seeded, plain TypeScript, about 14 s of CPU.
 * (Over 1,000 tables the symmetric interval covered 94.9% with the difference and 93.9% without.)
 */

import { Rng } from "@cxr/data";
import { describe, expect, it } from "vitest";
import { evaluatePredictions } from "../../packages/classifier/src/evaluation/evaluate.ts";
import {
  createPredictionTable,
  type PredictionInput,
  type PredictionTable,
} from "../../packages/classifier/src/evaluation/predictions.ts";
import type {
  EvaluationDocument,
  GapResult,
} from "../../packages/classifier/src/evaluation/report-schema.ts";
import { synthesizePredictions } from "../../packages/classifier/src/evaluation/synthetic.ts";
import { RACES, type Race, SEXES, type Sex } from "../../packages/data/src/records.ts";

const TABLES = 300;
const ROUNDS = 200;
const PATIENTS = 300;
const RACE_SHARES = [0.4, 0.3, 0.15, 0.15];
const CONFIG = { bootstrapRounds: ROUNDS, minimumDenominator: 20 };

interface Scenario {
  /** Probability that an image with a finding is called "No Finding" (underdiagnosed), by sex. */
  underdiagnosis: Record<Sex, number>;
}
const NULL_SCENARIO: Scenario = { underdiagnosis: { female: 0.25, male: 0.25 } };
const INJECTED: Scenario = { underdiagnosis: { female: 0.3, male: 0.2 } };

function simulate(random: Rng, scenario: Scenario, name: string): PredictionTable {
  const rows: PredictionInput["rows"][number][] = [];
  const truth: number[] = [];
  const probability: number[] = [];
  for (let patient = 0; patient < PATIENTS; patient++) {
    const sex = SEXES[random.index(2)];
    let u = random.next();
    let race: Race = RACES[RACES.length - 1];
    for (let index = 0; index < RACES.length; index++) {
      u -= RACE_SHARES[index];
      if (u < 0) {
        race = RACES[index];
        break;
      }
    }
    // Mean-zero patient effect: the subgroup's true rate stays the scenario's value.
    const patientRate = scenario.underdiagnosis[sex] + (random.next() - 0.5) * 0.2;
    const images = 1 + random.index(3);
    for (let image = 0; image < images; image++) {
      rows.push({ patientId: `${name}-${patient}`, sex, age: 50, race });
      const noFinding = random.next() < 0.4 ? 1 : 0;
      truth.push(noFinding);
      const calledNoFinding = random.next() < (noFinding === 1 ? 0.8 : patientRate);
      probability.push(calledNoFinding ? 0.75 : 0.25);
    }
  }
  return createPredictionTable({ source: name, rows, labels: { "No Finding": { truth, probability } } });
}

/**
 * Scores take two values, 0.25 and 0.75, so the F1-optimal threshold fitted on the validation split
 * is 0.75 (F1 0.74 against 0.57 for calling everything "No Finding"): an image is called "No
 * Finding" exactly when the simulation said so, and the true rates are the scenario's.
 */
function evaluateTable(random: Rng, scenario: Scenario, table: number): EvaluationDocument {
  const predictions = simulate(random, scenario, `test${table}`);
  const validation = simulate(random, scenario, `valid${table}`);
  return evaluatePredictions({ predictions, validation }, { ...CONFIG, seed: 1000 + table });
}

function underdiagnosisGap(document: EvaluationDocument, dimension: string): GapResult {
  return document.gaps.find((gap) => gap.dimension === dimension && gap.metric === "underdiagnosisRate")!;
}

const covers = (lower: number | null, upper: number | null, truth: number) =>
  lower !== null && upper !== null && lower <= truth && truth <= upper;

interface Tally {
  covered: number;
  total: number;
  error: number;
}
const tally = (): Tally => ({ covered: 0, total: 0, error: 0 });
function record(
  entry: Tally,
  value: number | null,
  lower: number | null,
  upper: number | null,
  truth: number,
) {
  expect(value).not.toBeNull();
  entry.total++;
  entry.error += value! - truth;
  if (covers(lower, upper, truth)) entry.covered++;
}
const coverage = (entry: Tally) => entry.covered / entry.total;
const bias = (entry: Tally) => entry.error / entry.total;

describe("calibration of gap intervals on simulated tables", () => {
  it(`covers a known 0.10 underdiagnosis difference and a true 0 in >= 92% of ${TABLES} tables, unbiased`, () => {
    const random = new Rng(20260401);
    const injectedPair = tally();
    const injectedHeadline = tally();
    const nullRacePairs = tally();
    const nullRaceSimultaneous = tally();
    const nullRaceAllPairwise = tally();
    const nullRaceHeadline = tally();
    const nullSexHeadline = tally();
    for (let table = 0; table < TABLES; table++) {
      // A known difference: women 0.30, men 0.20; race has no effect.
      const injected = evaluateTable(random, INJECTED, table);
      expect(injected.thresholds["No Finding"]).toBe(0.75);
      const sex = underdiagnosisGap(injected, "sex");
      expect(sex.pairs).toHaveLength(1);
      const pair = sex.pairs[0];
      expect([pair.first, pair.second]).toEqual(["female", "male"]);
      expect(pair.difference.roundsUsed).toBe(ROUNDS);
      record(injectedPair, pair.difference.value, pair.difference.lower, pair.difference.upper, 0.1);
      // The headline's truth depends on which pair the validation split chose.
      const headlineTruth = sex.headline.worst === "female" ? 0.1 : -0.1;
      record(
        injectedHeadline,
        sex.headline.gap.value,
        sex.headline.gap.lower,
        sex.headline.gap.upper,
        headlineTruth,
      );
      const injectedRace = underdiagnosisGap(injected, "race");
      expect(injectedRace.pairs).toHaveLength(6);

      // No subgroup effect at all: every difference is 0.
      const nothing = evaluateTable(random, NULL_SCENARIO, table);
      const race = underdiagnosisGap(nothing, "race");
      expect(race.pairs).toHaveLength(6);
      let allCovered = true;
      let allPairwiseCovered = true;
      for (const racePair of race.pairs) {
        record(
          nullRacePairs,
          racePair.difference.value,
          racePair.difference.lower,
          racePair.difference.upper,
          0,
        );
        allCovered &&= covers(racePair.simultaneousLower, racePair.simultaneousUpper, 0);
        allPairwiseCovered &&= covers(racePair.difference.lower, racePair.difference.upper, 0);
      }
      nullRaceSimultaneous.total++;
      if (allCovered) nullRaceSimultaneous.covered++;
      nullRaceAllPairwise.total++;
      if (allPairwiseCovered) nullRaceAllPairwise.covered++;
      const raceHeadline = race.headline.gap;
      record(nullRaceHeadline, raceHeadline.value, raceHeadline.lower, raceHeadline.upper, 0);
      const sexHeadline = underdiagnosisGap(nothing, "sex").headline.gap;
      record(nullSexHeadline, sexHeadline.value, sexHeadline.lower, sexHeadline.upper, 0);
    }
    const summary = Object.entries({
      injectedPair,
      injectedHeadline,
      nullRacePairs,
      nullRaceHeadline,
      nullSexHeadline,
    }).map(
      ([name, entry]) => `${name}: coverage ${coverage(entry).toFixed(3)}, bias ${bias(entry).toFixed(4)}`,
    );
    summary.push(`nullRaceSimultaneous: family-wise coverage ${coverage(nullRaceSimultaneous).toFixed(3)}`);
    summary.push(`nullRaceAllPairwise (no band): family-wise ${coverage(nullRaceAllPairwise).toFixed(3)}`);
    console.log(summary.join("\n"));

    for (const entry of [injectedPair, injectedHeadline, nullRacePairs, nullRaceHeadline, nullSexHeadline]) {
      expect(coverage(entry)).toBeGreaterThanOrEqual(0.92);
      expect(Math.abs(bias(entry))).toBeLessThan(0.01);
    }
    // All six race pairs at once: the sup-t band's family-wise coverage. A bootstrap band undercovers
    // a little at 300 patients (measured 91.7% here, 92.7% with another stream; the README says so),
    // so this asks for 90%, and more than the six per-pair 95% intervals achieve together.
    expect(coverage(nullRaceSimultaneous)).toBeGreaterThanOrEqual(0.9);
    expect(coverage(nullRaceSimultaneous)).toBeGreaterThan(coverage(nullRaceAllPairwise));
  }, 600_000); // about 14 s of CPU; 120 s wall when the full suite shares two cores

  it("the old max-minus-min statistic fails the same check (so the check has teeth)", () => {
    // Largest minus smallest race rate, re-picked in every table, under no effect: biased upwards.
    const random = new Rng(99);
    let sum = 0;
    const tables = 40;
    for (let table = 0; table < tables; table++) {
      const document = evaluateTable(random, NULL_SCENARIO, table);
      const values = underdiagnosisGap(document, "race").subgroups.map((member) => member.value);
      sum += Math.max(...values) - Math.min(...values);
    }
    expect(sum / tables).toBeGreaterThan(0.05);
  });
});

describe("point estimates lie inside their intervals", () => {
  it("on realistic synthetic predictions (14 labels, biased scorer, several images per patient)", () => {
    const predictions = synthesizePredictions({
      images: 3000,
      patients: 1200,
      seed: 31,
      institutions: ["a", "b"],
    });
    const validation = synthesizePredictions({
      images: 1500,
      patients: 600,
      seed: 32,
      institutions: ["a", "b"],
    });
    const document = evaluatePredictions(
      { predictions, validation },
      { bootstrapRounds: 200, seed: 5, minimumDenominator: 30 },
    );
    let checked = 0;
    for (const gap of document.gaps) {
      const estimates = [gap.headline.gap, ...gap.pairs.map((pair) => pair.difference)];
      for (const estimate of estimates) {
        if (estimate.value === null || estimate.lower === null) continue;
        expect(estimate.lower).toBeLessThanOrEqual(estimate.value);
        expect(estimate.upper!).toBeGreaterThanOrEqual(estimate.value);
        expect(estimate.roundsUsed).toBeGreaterThanOrEqual(190);
        checked++;
      }
      for (const pair of gap.pairs) {
        if (pair.simultaneousLower === null) continue;
        expect(pair.simultaneousLower).toBeLessThanOrEqual(pair.difference.value!);
        expect(pair.simultaneousUpper!).toBeGreaterThanOrEqual(pair.difference.value!);
      }
    }
    expect(checked).toBeGreaterThan(100);
  });
});
