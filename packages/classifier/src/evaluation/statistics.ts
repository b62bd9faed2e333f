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
import type { Dimension, SubgroupIndex } from "./subgroups.ts";

/** Metrics computed for every (subgroup, label). */
export const LABEL_METRICS = [
  "auroc",
  "accuracy",
  "truePositiveRate",
  "falsePositiveRate",
  "precision",
] as const;
export type LabelMetric = (typeof LABEL_METRICS)[number];

/** Metrics whose largest-minus-smallest subgroup value is reported as a gap. */
export const GAP_METRICS = [
  "underdiagnosisRate",
  "overdiagnosisRate",
  "macroAuroc",
  "auroc",
  "truePositiveRate",
  "falsePositiveRate",
] as const;
export type GapMetric = (typeof GAP_METRICS)[number];

export const NO_FINDING: ChexpertLabel = "No Finding";

export interface GapDefinition {
  readonly dimension: Dimension;
  readonly metric: GapMetric;
  /** Label index for per-label metrics; -1 for underdiagnosis, overdiagnosis and macro AUROC. */
  readonly labelIndex: number;
}

/** Where each statistic lives in the vector. Identical for a model and its baseline. */
export interface StatisticsLayout {
  readonly subgroupCount: number;
  readonly labels: readonly ChexpertLabel[];
  /** Index of "No Finding" in labels, or -1 when the table has no such column. */
  readonly noFindingIndex: number;
  /** Labels averaged into macro AUROC: those whose AUROC is defined on the whole table. */
  readonly macroLabelIndices: readonly number[];
  readonly gaps: readonly GapDefinition[];
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
export function gapSlot(layout: StatisticsLayout, gapIndex: number): number {
  return overdiagnosisSlot(layout, layout.subgroupCount) + gapIndex;
}

/** The slot of a gap metric's value for one subgroup. */
export function subgroupValueSlot(layout: StatisticsLayout, gap: GapDefinition, subgroup: number): number {
  switch (gap.metric) {
    case "underdiagnosisRate":
      return underdiagnosisSlot(layout, subgroup);
    case "overdiagnosisRate":
      return overdiagnosisSlot(layout, subgroup);
    case "macroAuroc":
      return macroAurocSlot(layout, subgroup);
    default:
      return labelMetricSlot(layout, subgroup, gap.labelIndex, gap.metric);
  }
}

/** One model's predictions prepared for repeated weighted passes. */
export interface PreparedModel {
  readonly table: PredictionTable;
  readonly index: SubgroupIndex;
  readonly rankings: readonly RankedLabel[];
  /** Per label: the decision threshold, or null when none could be fitted. */
  readonly thresholds: readonly (number | null)[];
  /** Per gap in the layout: the subgroup ids that take part (big enough, value defined). */
  gapMembers: readonly (readonly number[])[];
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
  return { table, index, rankings, thresholds, gapMembers: [] };
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
 * values (a single class, no threshold, an empty denominator) are NaN. Gaps need
 * `model.gapMembers`; before those are chosen, gap slots are left NaN.
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

  for (let gapIndex = 0; gapIndex < layout.gaps.length; gapIndex++) {
    const members = model.gapMembers[gapIndex];
    out[gapSlot(layout, gapIndex)] =
      members === undefined ? Number.NaN : gapOf(out, layout, layout.gaps[gapIndex], members).gap;
  }
}

/** Largest minus smallest member value; NaN when fewer than two members or any value is undefined. */
export function gapOf(
  values: Float64Array,
  layout: StatisticsLayout,
  gap: GapDefinition,
  members: readonly number[],
): { gap: number; highest: number; lowest: number } {
  if (members.length < 2) return { gap: Number.NaN, highest: -1, lowest: -1 };
  let highest = -1;
  let lowest = -1;
  for (const subgroup of members) {
    const value = values[subgroupValueSlot(layout, gap, subgroup)];
    if (Number.isNaN(value)) return { gap: Number.NaN, highest: -1, lowest: -1 };
    if (highest < 0 || value > values[subgroupValueSlot(layout, gap, highest)]) highest = subgroup;
    if (lowest < 0 || value < values[subgroupValueSlot(layout, gap, lowest)]) lowest = subgroup;
  }
  const high = values[subgroupValueSlot(layout, gap, highest)];
  const low = values[subgroupValueSlot(layout, gap, lowest)];
  return { gap: high - low, highest, lowest };
}

function divide(numerator: number, denominator: number): number {
  return denominator === 0 ? Number.NaN : numerator / denominator;
}

/** Builds the layout: all gap definitions for every non-overall dimension. */
export function createLayout(
  labels: readonly ChexpertLabel[],
  index: SubgroupIndex,
  macroLabelIndices: readonly number[],
): StatisticsLayout {
  const gaps: GapDefinition[] = [];
  for (const dimension of index.dimensions) {
    if (dimension === "overall") continue;
    for (const metric of GAP_METRICS) {
      const perLabel = metric === "auroc" || metric === "truePositiveRate" || metric === "falsePositiveRate";
      if (!perLabel) {
        gaps.push({ dimension, metric, labelIndex: -1 });
        continue;
      }
      for (let labelIndex = 0; labelIndex < labels.length; labelIndex++)
        gaps.push({ dimension, metric, labelIndex });
    }
  }
  const subgroupCount = index.subgroups.length;
  const base = subgroupCount * labels.length * LABEL_METRICS.length + 3 * subgroupCount;
  return {
    subgroupCount,
    labels,
    noFindingIndex: labels.indexOf(NO_FINDING),
    macroLabelIndices,
    gaps,
    size: base + gaps.length,
  };
}

/**
 * Chooses each gap's members from the point estimate: subgroups of the gap's dimension with at least
 * `minimumSubgroupSize` images whose value is defined. Smaller subgroups are reported but left out,
 * because their rates are too noisy to rank.
 */
export function chooseGapMembers(
  pointEstimate: Float64Array,
  layout: StatisticsLayout,
  index: SubgroupIndex,
  minimumSubgroupSize: number,
): number[][] {
  return layout.gaps.map((gap) =>
    index.subgroups
      .filter(
        (subgroup) => subgroup.dimension === gap.dimension && subgroup.imageCount >= minimumSubgroupSize,
      )
      .filter((subgroup) => !Number.isNaN(pointEstimate[subgroupValueSlot(layout, gap, subgroup.id)]))
      .map((subgroup) => subgroup.id),
  );
}
