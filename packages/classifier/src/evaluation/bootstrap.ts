/**
 * Bootstrap intervals by resampling patients, not images: images of one patient are correlated, so
 * resampling them independently would make intervals too narrow. Each round draws as many patients
 * as there are, with replacement, from a seeded generator; a patient drawn k times counts k times
 * with all of their images. Several models (a candidate and its baseline) can share the same rounds,
 * which is the paired bootstrap used for comparisons.
 */

import { Rng } from "@cxr/data";
import type { PatientWeights } from "./auroc.ts";
import {
  computeStatistics,
  createStatisticsScratch,
  type PreparedModel,
  type StatisticsLayout,
} from "./statistics.ts";

export interface BootstrapSettings {
  readonly rounds: number;
  readonly seed: number;
}

/**
 * Multinomial patient multiplicities for one round: `patientCount` draws with replacement. A count
 * above 255 (the byte weights' limit) needs a patient drawn 256 times out of n draws, which is
 * impossible for n < 256 and has probability below n / 256! otherwise; it is still
 * checked rather than assumed.
 */
/** The bootstrap's stream for a seed: @cxr/data's shared generator, keyed by purpose. */
export function bootstrapStream(seed: number): Rng {
  return Rng.derive("bootstrap", seed);
}

export function resamplePatients(random: Rng, patientWeight: PatientWeights): void {
  const patientCount = patientWeight.length;
  patientWeight.fill(0);
  for (let draw = 0; draw < patientCount; draw++) {
    const patient = random.index(patientCount);
    if (patientWeight[patient] === 255) throw new Error("bootstrap: a patient was drawn more than 255 times");
    patientWeight[patient]++;
  }
}

/**
 * Bootstrap replicates of every statistic, one matrix per model, laid out statistic-major:
 * replicates[model][slot * rounds + round]. All models see the same patient draws in each round.
 */
export function bootstrapStatistics(
  models: readonly PreparedModel[],
  layout: StatisticsLayout,
  settings: BootstrapSettings,
): Float64Array[] {
  const { rounds } = settings;
  const patientCount = models[0].index.patientCount;
  for (const model of models) {
    if (model.index.patientCount !== patientCount) {
      throw new Error("bootstrap: paired models must share the same patients");
    }
  }
  const random = bootstrapStream(settings.seed);
  const patientWeight: PatientWeights = new Uint8Array(patientCount);
  const scratch = createStatisticsScratch(layout.subgroupCount);
  const roundValues = new Float64Array(layout.size);
  const replicates = models.map(() => new Float64Array(layout.size * rounds));
  for (let round = 0; round < rounds; round++) {
    resamplePatients(random, patientWeight);
    models.forEach((model, modelIndex) => {
      computeStatistics(model, layout, patientWeight, scratch, roundValues);
      const matrix = replicates[modelIndex];
      for (let slot = 0; slot < layout.size; slot++) matrix[slot * rounds + round] = roundValues[slot];
    });
  }
  return replicates;
}

/** Below this share of the requested rounds an interval is reported as undefined, never narrowed. */
export const MINIMUM_ROUNDS_SHARE = 0.95;

export interface Interval {
  /** Null when too few rounds gave a defined value (see intervalUndefinedReason). */
  readonly lower: number | null;
  readonly upper: number | null;
  /** Rounds in which the statistic was defined (a resample can lose a subgroup's only positives). */
  readonly roundsUsed: number;
  /** Why lower/upper are null although rounds were requested; null otherwise. */
  readonly intervalUndefinedReason: string | null;
}

/** The rounds an interval needs: 95% of those requested, rounded up. */
export function minimumRounds(requestedRounds: number): number {
  return Math.ceil(MINIMUM_ROUNDS_SHARE * requestedRounds - 1e-9);
}

export function tooFewRoundsReason(roundsUsed: number, requestedRounds: number): string {
  return (
    `only ${roundsUsed} of ${requestedRounds} bootstrap rounds gave a defined value ` +
    `(an interval needs ${minimumRounds(requestedRounds)}, 95%)`
  );
}

/**
 * Percentile interval of the defined replicates, with linear interpolation between order statistics
 * (numpy's default "linear" quantile): q-quantile = x[h] interpolated at h = (n - 1) q. Rounds where
 * the statistic is undefined (NaN) are counted out; when fewer than 95% of the rounds remain, the
 * interval is undefined with the reason, because the surviving rounds are a biased subset.
 */
export function percentileInterval(replicates: ArrayLike<number>, confidenceLevel: number): Interval {
  const defined: number[] = [];
  for (let index = 0; index < replicates.length; index++) {
    if (!Number.isNaN(replicates[index])) defined.push(replicates[index]);
  }
  const requested = replicates.length;
  if (requested === 0) return { lower: null, upper: null, roundsUsed: 0, intervalUndefinedReason: null };
  if (defined.length < minimumRounds(requested)) {
    return {
      lower: null,
      upper: null,
      roundsUsed: defined.length,
      intervalUndefinedReason: tooFewRoundsReason(defined.length, requested),
    };
  }
  const sorted = Float64Array.from(defined).sort();
  const tail = (1 - confidenceLevel) / 2;
  return {
    lower: quantile(sorted, tail),
    upper: quantile(sorted, 1 - tail),
    roundsUsed: sorted.length,
    intervalUndefinedReason: null,
  };
}

/**
 * Symmetric bootstrap interval around the estimate: value +- q, q the confidence-level quantile of
 * |replicate - value| over the defined rounds. Used for differences between subgroups, whose
 * bootstrap distribution is close to symmetric: it always contains the estimate, and in the
 * calibration simulation (test/classifier/calibration.test.ts) it covered 94.9% at 200 rounds where
 * the percentile interval covered 93.9%. Same 95%-of-rounds rule as percentileInterval.
 */
export function symmetricInterval(
  value: number,
  replicates: ArrayLike<number>,
  confidenceLevel: number,
): Interval {
  const deviations: number[] = [];
  for (let index = 0; index < replicates.length; index++) {
    if (!Number.isNaN(replicates[index])) deviations.push(Math.abs(replicates[index] - value));
  }
  const requested = replicates.length;
  if (requested === 0) return { lower: null, upper: null, roundsUsed: 0, intervalUndefinedReason: null };
  if (deviations.length < minimumRounds(requested)) {
    return {
      lower: null,
      upper: null,
      roundsUsed: deviations.length,
      intervalUndefinedReason: tooFewRoundsReason(deviations.length, requested),
    };
  }
  const halfWidth = quantile(Float64Array.from(deviations).sort(), confidenceLevel);
  return {
    lower: value - halfWidth,
    upper: value + halfWidth,
    roundsUsed: deviations.length,
    intervalUndefinedReason: null,
  };
}

export function quantile(sorted: Float64Array, probability: number): number {
  const position = (sorted.length - 1) * probability;
  const below = Math.floor(position);
  const above = Math.min(below + 1, sorted.length - 1);
  return sorted[below] + (position - below) * (sorted[above] - sorted[below]);
}

/** One statistic's replicates, as a view into a model's matrix. */
export function replicatesOf(matrix: Float64Array, slot: number, rounds: number): Float64Array {
  return matrix.subarray(slot * rounds, (slot + 1) * rounds);
}
