/**
 * Fairness gaps whose intervals mean what they say. Every statistic here compares subgroups that
 * are fixed by name before any resampling, so each bootstrap round recomputes the same quantity as
 * the point estimate:
 *
 * - pairwise differences: for every pair (a, b) of eligible subgroups of a dimension, value(a) -
 *   value(b), with a percentile interval per pair and a simultaneous (sup-t) band over the pairs of
 *   the dimension;
 * - the headline gap: worst-off minus best-off subgroup, the two chosen on the validation split and
 *   measured on the evaluated split, so the choice does not inflate the estimate.
 *
 * A subgroup enters only when the metric's own denominator (No Finding negatives for
 * underdiagnosis, positives for overdiagnosis, the smaller class for AUROC) reaches the minimum.
 * Definitions with formulas: packages/classifier/README.md, "Fairness gaps".
 */
import {
  minimumRounds,
  percentileInterval,
  quantile,
  replicatesOf,
  symmetricInterval,
  tooFewRoundsReason,
} from "./bootstrap.ts";
import type { Estimate, GapResult } from "./report-schema.ts";
import {
  GAP_METRICS,
  type GapMetric,
  type MetricKey,
  metricSlot,
  type StatisticsLayout,
} from "./statistics.ts";
import type { Dimension, SubgroupIndex } from "./subgroups.ts";

/** Metrics with every pairwise difference (and comparisons between models); others get the headline only. */
export const PAIR_METRICS: readonly GapMetric[] = ["underdiagnosisRate", "overdiagnosisRate", "macroAuroc"];

/** +1 when a higher value is worse for the subgroup (a rate of errors), -1 when higher is better. */
export const DISADVANTAGE_SIGN: Record<GapMetric, 1 | -1> = {
  underdiagnosisRate: 1,
  overdiagnosisRate: 1,
  falsePositiveRate: 1,
  truePositiveRate: -1,
  auroc: -1,
  macroAuroc: -1,
};

/** What each metric's denominator counts, for the document and the report. */
export const DENOMINATOR_OF: Record<GapMetric, string> = {
  underdiagnosisRate: "No Finding negatives",
  overdiagnosisRate: "No Finding positives",
  macroAuroc: "images of the smaller class in every macro label",
  auroc: "images of the smaller class",
  truePositiveRate: "positives",
  falsePositiveRate: "negatives",
};

export const SIMULTANEOUS_METHOD =
  "sup-t band: bootstrap quantile of max over pairs of |replicate - estimate| / bootstrap SE";
export const HEADLINE_SELECTION =
  "worst-off and best-off subgroups chosen on the validation split, the difference measured on the evaluated split";

/** Unweighted known-truth counts per label (arrays by subgroup id). */
export interface ClassCounts {
  readonly positives: readonly Float64Array[];
  readonly negatives: readonly Float64Array[];
}

/** A metric's value for a subgroup of the validation split, found by name; NaN when undefined or absent. */
export type ValidationLookup = (key: MetricKey, dimension: Dimension, name: string) => number;

export interface GapPlanEntry {
  readonly dimension: Dimension;
  readonly key: MetricKey;
  /** Eligible subgroup ids, in category order. */
  readonly members: readonly number[];
  readonly denominators: ReadonlyMap<number, number>;
  readonly excluded: readonly { subgroup: number; denominator: number; reason: string }[];
  /** Ordered pairs [first, second], first before second in category order; empty for per-label metrics. */
  readonly pairs: readonly (readonly [number, number])[];
  readonly headline: { readonly worst: number; readonly best: number } | { readonly reason: string };
}

/** The denominator that decides whether a subgroup's value may enter a gap. */
export function denominatorOf(
  layout: StatisticsLayout,
  counts: ClassCounts,
  key: MetricKey,
  subgroup: number,
): number {
  const smallerClass = (labelIndex: number) =>
    Math.min(counts.positives[labelIndex][subgroup], counts.negatives[labelIndex][subgroup]);
  switch (key.metric) {
    case "underdiagnosisRate":
      return layout.noFindingIndex < 0 ? 0 : counts.negatives[layout.noFindingIndex][subgroup];
    case "overdiagnosisRate":
      return layout.noFindingIndex < 0 ? 0 : counts.positives[layout.noFindingIndex][subgroup];
    case "macroAuroc":
      return layout.macroLabelIndices.length === 0
        ? 0
        : Math.min(...layout.macroLabelIndices.map((labelIndex) => smallerClass(labelIndex)));
    case "auroc":
      return smallerClass(key.labelIndex);
    case "truePositiveRate":
      return counts.positives[key.labelIndex][subgroup];
    case "falsePositiveRate":
      return counts.negatives[key.labelIndex][subgroup];
  }
}

/** Every (dimension, metric) whose subgroups are compared. */
export function gapKeys(
  layout: StatisticsLayout,
  index: SubgroupIndex,
): { dimension: Dimension; key: MetricKey }[] {
  const keys: { dimension: Dimension; key: MetricKey }[] = [];
  for (const dimension of index.dimensions) {
    if (dimension === "overall") continue;
    for (const metric of GAP_METRICS) {
      if (PAIR_METRICS.includes(metric)) {
        keys.push({ dimension, key: { metric, labelIndex: -1 } });
        continue;
      }
      for (let labelIndex = 0; labelIndex < layout.labels.length; labelIndex++) {
        keys.push({ dimension, key: { metric, labelIndex } });
      }
    }
  }
  return keys;
}

/**
 * Decides, before any resampling, which subgroups take part in each gap, which pairs are compared
 * and which pair is the headline. `explain` gives the reason a subgroup's value is undefined.
 */
export function planGaps(options: {
  layout: StatisticsLayout;
  index: SubgroupIndex;
  counts: ClassCounts;
  pointValues: Float64Array;
  minimumDenominator: number;
  validation: ValidationLookup | null;
  /** Why there is no validation split to choose the headline pair on (when validation is null). */
  noValidationReason: string;
  explain: (key: MetricKey, subgroup: number) => string;
}): GapPlanEntry[] {
  const { layout, index, counts, pointValues, minimumDenominator, validation } = options;
  return gapKeys(layout, index).map(({ dimension, key }) => {
    const members: number[] = [];
    const denominators = new Map<number, number>();
    const excluded: { subgroup: number; denominator: number; reason: string }[] = [];
    for (const subgroup of index.subgroups) {
      if (subgroup.dimension !== dimension) continue;
      const denominator = denominatorOf(layout, counts, key, subgroup.id);
      denominators.set(subgroup.id, denominator);
      if (denominator < minimumDenominator) {
        excluded.push({
          subgroup: subgroup.id,
          denominator,
          reason: `${denominator} ${DENOMINATOR_OF[key.metric]}, below the minimum of ${minimumDenominator}`,
        });
      } else if (Number.isNaN(pointValues[metricSlot(layout, key, subgroup.id)])) {
        excluded.push({
          subgroup: subgroup.id,
          denominator,
          reason: `value undefined: ${options.explain(key, subgroup.id)}`,
        });
      } else {
        members.push(subgroup.id);
      }
    }
    const pairs: [number, number][] = [];
    if (PAIR_METRICS.includes(key.metric)) {
      for (let first = 0; first < members.length; first++) {
        for (let second = first + 1; second < members.length; second++)
          pairs.push([members[first], members[second]]);
      }
    }
    return {
      dimension,
      key,
      members,
      denominators,
      excluded,
      pairs,
      headline: chooseHeadline(dimension, key, members),
    };
  });

  function chooseHeadline(
    dimension: Dimension,
    key: MetricKey,
    members: readonly number[],
  ): GapPlanEntry["headline"] {
    if (members.length < 2) {
      return {
        reason: `fewer than two ${dimension} subgroups reach the minimum of ${minimumDenominator} ${DENOMINATOR_OF[key.metric]} with a defined value`,
      };
    }
    if (validation === null) return { reason: options.noValidationReason };
    const sign = DISADVANTAGE_SIGN[key.metric];
    const scored = members
      .map((id) => ({ id, disadvantage: sign * validation(key, dimension, index.subgroups[id].name) }))
      .filter((entry) => !Number.isNaN(entry.disadvantage));
    if (scored.length < 2) {
      return {
        reason: `fewer than two eligible ${dimension} subgroups have a defined value on the validation split, so the worst-off and best-off cannot be chosen there`,
      };
    }
    // Ties go to the first subgroup in category order for the worst, the last for the best.
    let worst = scored[0];
    for (const entry of scored) if (entry.disadvantage > worst.disadvantage) worst = entry;
    const others = scored.filter((entry) => entry.id !== worst.id);
    let best = others[others.length - 1];
    for (const entry of others) if (entry.disadvantage < best.disadvantage) best = entry;
    return { worst: worst.id, best: best.id };
  }
}

/** Per-round values of sign * (value(a) - value(b)); NaN where either is undefined. */
export function differenceReplicates(
  matrix: Float64Array,
  layout: StatisticsLayout,
  key: MetricKey,
  a: number,
  b: number,
  rounds: number,
  sign = 1,
): Float64Array {
  const first = replicatesOf(matrix, metricSlot(layout, key, a), rounds);
  const second = replicatesOf(matrix, metricSlot(layout, key, b), rounds);
  return Float64Array.from(first, (value, round) => sign * (value - second[round]));
}

/**
 * An estimate from a point value and its replicates, with the 95%-of-rounds rule. Differences between
 * subgroups use the symmetric interval (see symmetricInterval); ratios the percentile interval.
 */
export function estimateFrom(
  value: number,
  replicates: Float64Array | null,
  confidenceLevel: number,
  undefinedReason: string,
  interval: "symmetric" | "percentile" = "symmetric",
): Estimate {
  if (!Number.isFinite(value)) {
    return {
      value: null,
      lower: null,
      upper: null,
      roundsUsed: 0,
      undefinedReason,
      intervalUndefinedReason: null,
    };
  }
  if (replicates === null || replicates.length === 0) {
    return {
      value,
      lower: null,
      upper: null,
      roundsUsed: 0,
      undefinedReason: null,
      intervalUndefinedReason: null,
    };
  }
  const bounds =
    interval === "symmetric"
      ? symmetricInterval(value, replicates, confidenceLevel)
      : percentileInterval(replicates, confidenceLevel);
  return { value, ...bounds, undefinedReason: null };
}

export interface SimultaneousBand {
  readonly criticalValue: number | null;
  readonly roundsUsed: number;
  readonly undefinedReason: string | null;
  /** Per pair: [lower, upper], or null when the band is undefined. */
  readonly bounds: readonly ([number, number] | null)[];
}

/**
 * Sup-t simultaneous band (Montiel Olea and Plagborg-Moller, 2019): with se_k the bootstrap standard
 * deviation of pair k, c is the confidence-level quantile over rounds of max_k |d*_k - d_k| / se_k,
 * and pair k's band is d_k +- c se_k. All pairs of a dimension cover together with the stated level
 * (asymptotically), without Bonferroni's loss of power; a round counts only when every pair is
 * defined in it. Pairs whose replicates never vary (se 0) get a zero-width band and do not enter c.
 */
export function supTBand(
  estimates: readonly number[],
  replicates: readonly Float64Array[],
  confidenceLevel: number,
  rounds: number,
): SimultaneousBand {
  const pairCount = estimates.length;
  if (rounds === 0 || pairCount === 0) {
    return { criticalValue: null, roundsUsed: 0, undefinedReason: null, bounds: estimates.map(() => null) };
  }
  const usedRounds: number[] = [];
  for (let round = 0; round < rounds; round++) {
    if (replicates.every((pair) => !Number.isNaN(pair[round]))) usedRounds.push(round);
  }
  if (usedRounds.length < minimumRounds(rounds)) {
    return {
      criticalValue: null,
      roundsUsed: usedRounds.length,
      undefinedReason: tooFewRoundsReason(usedRounds.length, rounds).replace(
        "a defined value",
        "a defined value for every pair",
      ),
      bounds: estimates.map(() => null),
    };
  }
  const standardErrors = replicates.map((pair) => {
    let sum = 0;
    for (const round of usedRounds) sum += pair[round];
    const mean = sum / usedRounds.length;
    let squares = 0;
    for (const round of usedRounds) squares += (pair[round] - mean) ** 2;
    return usedRounds.length > 1 ? Math.sqrt(squares / (usedRounds.length - 1)) : 0;
  });
  const maxima = new Float64Array(usedRounds.length);
  usedRounds.forEach((round, position) => {
    let largest = 0;
    for (let pair = 0; pair < pairCount; pair++) {
      const se = standardErrors[pair];
      if (se > 0) largest = Math.max(largest, Math.abs(replicates[pair][round] - estimates[pair]) / se);
    }
    maxima[position] = largest;
  });
  maxima.sort();
  const critical = quantile(maxima, confidenceLevel);
  return {
    criticalValue: critical,
    roundsUsed: usedRounds.length,
    undefinedReason: null,
    bounds: estimates.map((estimate, pair) => [
      estimate - critical * standardErrors[pair],
      estimate + critical * standardErrors[pair],
    ]),
  };
}

/** The document's gaps: pairwise differences with marginal and simultaneous intervals, and the headline. */
export function gapResults(options: {
  plan: readonly GapPlanEntry[];
  layout: StatisticsLayout;
  index: SubgroupIndex;
  pointValues: Float64Array;
  /** Bootstrap replicates (statistic-major), or null without bootstrap. */
  replicates: Float64Array | null;
  rounds: number;
  confidenceLevel: number;
}): GapResult[] {
  const { plan, layout, index, pointValues, replicates, rounds, confidenceLevel } = options;
  const name = (id: number) => index.subgroups[id].name;
  const valueAt = (key: MetricKey, id: number) => pointValues[metricSlot(layout, key, id)];
  return plan.map((entry) => {
    const { key } = entry;
    const pairValues = entry.pairs.map(([a, b]) => valueAt(key, a) - valueAt(key, b));
    const pairReplicates =
      replicates === null
        ? []
        : entry.pairs.map(([a, b]) => differenceReplicates(replicates, layout, key, a, b, rounds));
    const band = supTBand(pairValues, pairReplicates, confidenceLevel, replicates === null ? 0 : rounds);
    const pairs = entry.pairs.map(([a, b], pairIndex) => ({
      first: name(a),
      second: name(b),
      difference: estimateFrom(pairValues[pairIndex], pairReplicates[pairIndex] ?? null, confidenceLevel, ""),
      simultaneousLower: band.bounds[pairIndex]?.[0] ?? null,
      simultaneousUpper: band.bounds[pairIndex]?.[1] ?? null,
    }));
    const headline = entry.headline;
    let headlineResult: GapResult["headline"];
    if ("reason" in headline) {
      headlineResult = {
        worst: null,
        best: null,
        gap: estimateFrom(Number.NaN, null, confidenceLevel, headline.reason),
      };
    } else {
      const sign = DISADVANTAGE_SIGN[key.metric];
      const value = sign * (valueAt(key, headline.worst) - valueAt(key, headline.best));
      const headlineReplicates =
        replicates === null
          ? null
          : differenceReplicates(replicates, layout, key, headline.worst, headline.best, rounds, sign);
      headlineResult = {
        worst: name(headline.worst),
        best: name(headline.best),
        gap: estimateFrom(value, headlineReplicates, confidenceLevel, ""),
      };
    }
    return {
      dimension: entry.dimension,
      metric: key.metric,
      label: key.labelIndex < 0 ? null : layout.labels[key.labelIndex],
      denominator: DENOMINATOR_OF[key.metric],
      subgroups: entry.members.map((id) => ({
        subgroup: name(id),
        denominator: entry.denominators.get(id) ?? 0,
        value: valueAt(key, id),
      })),
      excluded: entry.excluded.map((excluded) => ({
        subgroup: name(excluded.subgroup),
        denominator: excluded.denominator,
        reason: excluded.reason,
      })),
      headline: headlineResult,
      pairs,
      simultaneous:
        entry.pairs.length === 0
          ? null
          : {
              method: SIMULTANEOUS_METHOD,
              pairs: entry.pairs.length,
              criticalValue: band.criticalValue,
              roundsUsed: band.roundsUsed,
              undefinedReason: band.undefinedReason ?? (replicates === null ? "no bootstrap rounds" : null),
            },
    };
  });
}
