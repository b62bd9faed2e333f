/**
 * Every number the evaluation reports, computed from one set of patient weights into one flat
 * vector. The point estimate uses weight 1 for every patient; each bootstrap round uses the
 * patients' resampling multiplicities. Sharing this one function is what makes the intervals
 * describe exactly the numbers printed beside them.
 */
import type { ChexpertLabel } from "@cxr/data";
import {
  accumulateRankedLabel,
  aurocFromCounts,
  createSubgroupCounts,
  type PatientWeights,
  type RankedLabel,
  rankLabel,
  type SubgroupCounts,
} from "./auroc.ts";
import type { PredictionTable } from "./predictions.ts";
import type { SubgroupIndex } from "./subgroups.ts";

/** Metrics computed for every (subgroup, label). */
export const LABEL_METRICS = [
  "auroc",
  "accuracy",
  "truePositiveRate",
  "falsePositiveRate",
  "precision",
] as const;
export type LabelMetric = (typeof LABEL_METRICS)[number];

/**
 * Metrics compared between subgroups. Underdiagnosis, overdiagnosis and macro AUROC get every
 * pairwise difference; every metric gets a headline gap (see gaps.ts).
 */
export const GAP_METRICS = [
  "underdiagnosisRate",
  "overdiagnosisRate",
  "macroAuroc",
  "auroc",
  "truePositiveRate",
  "falsePositiveRate",
] as const;
export type GapMetric = (typeof GAP_METRICS)[number];

/** A metric of one subgroup: the label index for per-label metrics, -1 otherwise. */
export interface MetricKey {
  readonly metric: GapMetric;
  readonly labelIndex: number;
}

export const NO_FINDING: ChexpertLabel = "No Finding";

/** Where each statistic lives in the vector. Identical for a model and its baseline. */
export interface StatisticsLayout {
  readonly subgroupCount: number;
  readonly labels: readonly ChexpertLabel[];
  /** Index of "No Finding" in labels, or -1 when the table has no such column. */
  readonly noFindingIndex: number;
  /** Labels averaged into macro AUROC: those whose AUROC is defined on the whole table. */
  readonly macroLabelIndices: readonly number[];
  readonly size: number;
}

export function labelMetricSlot(
  layout: StatisticsLayout,
  subgroup: number,
  labelIndex: number,
  metric: LabelMetric,
) {
  return (
    (subgroup * layout.labels.length + labelIndex) * LABEL_METRICS.length + LABEL_METRICS.indexOf(metric)
  );
}
export function macroAurocSlot(layout: StatisticsLayout, subgroup: number): number {
  return layout.subgroupCount * layout.labels.length * LABEL_METRICS.length + subgroup;
}
export function underdiagnosisSlot(layout: StatisticsLayout, subgroup: number): number {
  return macroAurocSlot(layout, layout.subgroupCount) + subgroup;
}
export function overdiagnosisSlot(layout: StatisticsLayout, subgroup: number): number {
  return underdiagnosisSlot(layout, layout.subgroupCount) + subgroup;
}

/** The slot of a metric's value for one subgroup. */
export function metricSlot(layout: StatisticsLayout, key: MetricKey, subgroup: number): number {
  switch (key.metric) {
    case "underdiagnosisRate":
      return underdiagnosisSlot(layout, subgroup);
    case "overdiagnosisRate":
      return overdiagnosisSlot(layout, subgroup);
    case "macroAuroc":
      return macroAurocSlot(layout, subgroup);
    default:
      return labelMetricSlot(layout, subgroup, key.labelIndex, key.metric);
  }
}

/** One model's predictions prepared for repeated weighted passes. */
export interface PreparedModel {
  readonly table: PredictionTable;
  readonly index: SubgroupIndex;
  readonly rankings: readonly RankedLabel[];
  /** Per label: the decision threshold, or null when none could be fitted. */
  readonly thresholds: readonly (number | null)[];
}

export function prepareModel(
  table: PredictionTable,
  index: SubgroupIndex,
  thresholds: readonly (number | null)[],
): PreparedModel {
  const dimensionCount = index.dimensions.length;
  const rankings = table.labels.map((_, labelIndex) =>
    rankLabel(
      table.truth[labelIndex],
      table.probability[labelIndex],
      index.patientOfRow,
      index.membership,
      dimensionCount,
      index.subgroups.length,
      thresholds[labelIndex],
    ),
  );
  return { table, index, rankings, thresholds };
}

/** Reusable buffers for {@link computeStatistics}. */
export interface StatisticsScratch {
  readonly counts: SubgroupCounts;
}

export function createStatisticsScratch(subgroupCount: number): StatisticsScratch {
  return { counts: createSubgroupCounts(subgroupCount) };
}

/**
 * Fills `out` (length layout.size) with every statistic for the given patient weights. Undefined
 * values (a single class, no threshold, an empty denominator) are NaN. Differences between
 * subgroups are formed afterwards from these values (gaps.ts), round by round.
 */
export function computeStatistics(
  model: PreparedModel,
  layout: StatisticsLayout,
  patientWeight: PatientWeights,
  scratch: StatisticsScratch,
  out: Float64Array,
  perLabelCounts?: (labelIndex: number, counts: SubgroupCounts) => void,
): void {
  const { counts } = scratch;
  const subgroupCount = layout.subgroupCount;
  const metricCount = LABEL_METRICS.length;
  const labelCount = layout.labels.length;

  for (let labelIndex = 0; labelIndex < labelCount; labelIndex++) {
    const hasThreshold = model.thresholds[labelIndex] !== null;
    accumulateRankedLabel(model.rankings[labelIndex], patientWeight, counts);
    perLabelCounts?.(labelIndex, counts);
    for (let subgroup = 0; subgroup < subgroupCount; subgroup++) {
      const slot = (subgroup * labelCount + labelIndex) * metricCount;
      const positives = counts.positives[subgroup];
      const negatives = counts.negatives[subgroup];
      out[slot] = aurocFromCounts(counts, subgroup);
      if (!hasThreshold) {
        out[slot + 1] = out[slot + 2] = out[slot + 3] = out[slot + 4] = Number.NaN;
        continue;
      }
      const falseNegatives = counts.positivesBelowThreshold[subgroup];
      const trueNegatives = counts.negativesBelowThreshold[subgroup];
      const truePositives = positives - falseNegatives;
      const falsePositives = negatives - trueNegatives;
      out[slot + 1] = divide(truePositives + trueNegatives, positives + negatives);
      out[slot + 2] = divide(truePositives, positives);
      out[slot + 3] = divide(falsePositives, negatives);
      out[slot + 4] = divide(truePositives, truePositives + falsePositives);
    }
  }

  const macroCount = layout.macroLabelIndices.length;
  for (let subgroup = 0; subgroup < subgroupCount; subgroup++) {
    let sum = 0;
    for (const labelIndex of layout.macroLabelIndices) {
      sum += out[(subgroup * labelCount + labelIndex) * metricCount];
    }
    // A NaN member makes the mean NaN: a subgroup's macro AUROC needs every macro label defined.
    out[macroAurocSlot(layout, subgroup)] = macroCount === 0 ? Number.NaN : sum / macroCount;
    const noFinding = layout.noFindingIndex;
    const noFindingSlot = (subgroup * labelCount + noFinding) * metricCount;
    out[underdiagnosisSlot(layout, subgroup)] = noFinding < 0 ? Number.NaN : out[noFindingSlot + 3];
    out[overdiagnosisSlot(layout, subgroup)] = noFinding < 0 ? Number.NaN : 1 - out[noFindingSlot + 2];
  }
}

function divide(numerator: number, denominator: number): number {
  return denominator === 0 ? Number.NaN : numerator / denominator;
}

/** Builds the layout of the statistics vector. */
export function createLayout(
  labels: readonly ChexpertLabel[],
  index: SubgroupIndex,
  macroLabelIndices: readonly number[],
): StatisticsLayout {
  const subgroupCount = index.subgroups.length;
  return {
    subgroupCount,
    labels,
    noFindingIndex: labels.indexOf(NO_FINDING),
    macroLabelIndices,
    size: subgroupCount * labels.length * LABEL_METRICS.length + 3 * subgroupCount,
  };
}
