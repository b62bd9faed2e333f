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

export interface Interval {
  /** Null when no round gave a defined value. */
  readonly lower: number | null;
  readonly upper: number | null;
  /** Rounds in which the statistic was defined (a resample can lose a subgroup's only positives). */
  readonly roundsUsed: number;
}

/**
 * Percentile interval of the defined replicates, with linear interpolation between order statistics
 * (numpy's default "linear" quantile): q-quantile = x[h] interpolated at h = (n - 1) q.
 */
export function percentileInterval(replicates: ArrayLike<number>, confidenceLevel: number): Interval {
  const defined: number[] = [];
  for (let index = 0; index < replicates.length; index++) {
    if (!Number.isNaN(replicates[index])) defined.push(replicates[index]);
  }
  if (defined.length === 0) return { lower: null, upper: null, roundsUsed: 0 };
  const sorted = Float64Array.from(defined).sort();
  const tail = (1 - confidenceLevel) / 2;
  return { lower: quantile(sorted, tail), upper: quantile(sorted, 1 - tail), roundsUsed: sorted.length };
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
