/**
 * Comparing a model against a baseline on the same images: the baseline's rows are matched to the
 * candidate's (by image_id when both files have it, otherwise by position) and checked to describe
 * the same patients and truth, then both are resampled with the same patient draws (paired
 * bootstrap), so the interval of a difference reflects only the models, not the sample.
 */
import { replicatesOf, symmetricInterval } from "./bootstrap.ts";
import {
  DISADVANTAGE_SIGN,
  differenceReplicates,
  estimateFrom,
  type GapPlanEntry,
  PAIR_METRICS,
} from "./gaps.ts";
import { describeRow, type PredictionRow, type PredictionTable } from "./predictions.ts";
import type { Comparison, Difference, Estimate, ThresholdResult } from "./report-schema.ts";
import {
  LABEL_METRICS,
  labelMetricSlot,
  macroAurocSlot,
  metricSlot,
  overdiagnosisSlot,
  type StatisticsLayout,
  underdiagnosisSlot,
} from "./statistics.ts";
import type { SubgroupIndex } from "./subgroups.ts";

/**
 * Returns the baseline reordered to the candidate's rows. Throws, naming the row and column, when a
 * baseline row has no counterpart or disagrees on patient, demographics or truth.
 */
export function alignBaseline(candidate: PredictionTable, baseline: PredictionTable): PredictionTable {
  const missing = candidate.labels.filter((label) => !baseline.labels.includes(label));
  const extra = baseline.labels.filter((label) => !candidate.labels.includes(label));
  if (missing.length > 0 || extra.length > 0) {
    const parts = [
      missing.length > 0 ? `baseline lacks ${missing.join(", ")}` : "",
      extra.length > 0 ? `only the baseline has ${extra.join(", ")}` : "",
    ].filter(Boolean);
    throw new Error(`${baseline.source}: labels differ from ${candidate.source} (${parts.join("; ")})`);
  }
  if (baseline.rows.length !== candidate.rows.length) {
    throw new Error(
      `${baseline.source}: ${baseline.rows.length} rows, but ${candidate.source} has ${candidate.rows.length}; ` +
        "a baseline must cover the same images",
    );
  }
  const byImageId = candidate.rows[0].imageId !== null && baseline.rows[0].imageId !== null;
  const candidateRowOfBaselineRow = byImageId
    ? matchByImageId(candidate, baseline)
    : Int32Array.from(baseline.rows, (_, row) => row);

  const rowCount = candidate.rows.length;
  const labelIndexInBaseline = candidate.labels.map((label) => baseline.labels.indexOf(label));
  const truth = candidate.labels.map(() => new Int8Array(rowCount));
  const probability = candidate.labels.map(() => new Float64Array(rowCount));
  for (let baselineRow = 0; baselineRow < rowCount; baselineRow++) {
    const candidateRow = candidateRowOfBaselineRow[baselineRow];
    checkSameImage(candidate, candidateRow, baseline, baselineRow);
    candidate.labels.forEach((label, labelIndex) => {
      const baselineLabel = labelIndexInBaseline[labelIndex];
      const baselineTruth = baseline.truth[baselineLabel][baselineRow];
      if (baselineTruth !== candidate.truth[labelIndex][candidateRow]) {
        throw new Error(
          `${describeRow(baseline, baselineRow)}, column "${label}_true": true value differs from ` +
            `${describeRow(candidate, candidateRow)}`,
        );
      }
      truth[labelIndex][candidateRow] = baselineTruth;
      probability[labelIndex][candidateRow] = baseline.probability[baselineLabel][baselineRow];
    });
  }
  return {
    source: baseline.source,
    labels: candidate.labels,
    missingLabels: baseline.missingLabels,
    rows: candidate.rows,
    truth,
    probability,
    ignoredColumns: baseline.ignoredColumns,
    sourceRows: candidate.sourceRows,
  };
}

function matchByImageId(candidate: PredictionTable, baseline: PredictionTable): Int32Array {
  const candidateRowById = new Map<string, number>();
  candidate.rows.forEach((row, index) => {
    const id = row.imageId!;
    if (candidateRowById.has(id)) {
      throw new Error(`${describeRow(candidate, index)}, column "image_id": image id "${id}" appears twice`);
    }
    candidateRowById.set(id, index);
  });
  const matched = new Int32Array(baseline.rows.length);
  const seen = new Set<string>();
  baseline.rows.forEach((row, index) => {
    const id = row.imageId!;
    const candidateRow = candidateRowById.get(id);
    if (candidateRow === undefined) {
      throw new Error(
        `${describeRow(baseline, index)}, column "image_id": image id "${id}" is not in ${candidate.source}`,
      );
    }
    if (seen.has(id)) {
      throw new Error(`${describeRow(baseline, index)}, column "image_id": image id "${id}" appears twice`);
    }
    seen.add(id);
    matched[index] = candidateRow;
  });
  return matched;
}

function checkSameImage(
  candidate: PredictionTable,
  candidateRow: number,
  baseline: PredictionTable,
  baselineRow: number,
): void {
  const a = candidate.rows[candidateRow];
  const b = baseline.rows[baselineRow];
  const fields: [keyof PredictionRow, string][] = [
    ["patientId", "patient_id"],
    ["sex", "sex"],
    ["age", "age"],
    ["race", "race"],
    ["institution", "institution"],
  ];
  for (const [field, column] of fields) {
    if (a[field] !== b[field]) {
      throw new Error(
        `${describeRow(baseline, baselineRow)}, column "${column}": "${b[field]}" does not match ` +
          `"${a[field]}" at ${describeRow(candidate, candidateRow)}; the baseline must describe the same images`,
      );
    }
  }
}

/**
 * Paired-bootstrap differences (candidate minus baseline) for the headline numbers, and for every
 * fixed-pair gap: the same pair of subgroups, named before resampling, measured on both models.
 */
export function buildComparison(options: {
  baselineSource: string;
  baselineThresholds: ThresholdResult[];
  layout: StatisticsLayout;
  index: SubgroupIndex;
  plan: readonly GapPlanEntry[];
  candidatePoint: Float64Array;
  baselinePoint: Float64Array;
  /** Replicate matrices (statistic-major), or null without bootstrap. */
  candidateReplicates: Float64Array | null;
  baselineReplicates: Float64Array | null;
  rounds: number;
  confidenceLevel: number;
}): Comparison {
  const { layout, index, candidatePoint, baselinePoint, candidateReplicates, baselineReplicates, rounds } =
    options;
  const combine = (
    candidate: Float64Array | null,
    baseline: Float64Array | null,
    operation: (candidate: number, baseline: number) => number,
  ) =>
    candidate === null || baseline === null
      ? null
      : Float64Array.from(candidate, (value, round) => operation(value, baseline[round]));
  const differenceOf = (
    candidate: number,
    baseline: number,
    candidateRounds: Float64Array | null,
    baselineRounds: Float64Array | null,
    interval: "symmetric" | "percentile" = "percentile",
  ): Difference => ({
    candidate: Number.isNaN(candidate) ? null : candidate,
    baseline: Number.isNaN(baseline) ? null : baseline,
    difference: estimateFrom(
      candidate - baseline,
      combine(candidateRounds, baselineRounds, (c, b) => c - b),
      options.confidenceLevel,
      "undefined for the candidate or the baseline",
      interval,
    ),
  });
  const slotRounds = (matrix: Float64Array | null, slot: number) =>
    matrix === null ? null : replicatesOf(matrix, slot, rounds);
  const difference = (slot: number): Difference =>
    differenceOf(
      candidatePoint[slot],
      baselinePoint[slot],
      slotRounds(candidateReplicates, slot),
      slotRounds(baselineReplicates, slot),
    );

  const gaps: Comparison["gaps"] = [];
  for (const entry of options.plan) {
    if (!PAIR_METRICS.includes(entry.key.metric)) continue;
    const valueAt = (point: Float64Array, id: number) => point[metricSlot(layout, entry.key, id)];
    const fixedPair = (kind: "pair" | "headline", a: number, b: number, sign: 1 | -1) => {
      const candidate = sign * (valueAt(candidatePoint, a) - valueAt(candidatePoint, b));
      const baseline = sign * (valueAt(baselinePoint, a) - valueAt(baselinePoint, b));
      const rounds_ = (matrix: Float64Array | null) =>
        matrix === null ? null : differenceReplicates(matrix, layout, entry.key, a, b, rounds, sign);
      const candidateRounds = rounds_(candidateReplicates);
      const baselineRounds = rounds_(baselineReplicates);
      gaps.push({
        dimension: entry.dimension,
        metric: entry.key.metric,
        kind,
        first: index.subgroups[a].name,
        second: index.subgroups[b].name,
        gap: differenceOf(candidate, baseline, candidateRounds, baselineRounds, "symmetric"),
        relativeChange: relativeChange(candidate, baseline, candidateRounds, baselineRounds),
      });
    };
    for (const [a, b] of entry.pairs) fixedPair("pair", a, b, 1);
    if (!("reason" in entry.headline)) {
      fixedPair("headline", entry.headline.worst, entry.headline.best, DISADVANTAGE_SIGN[entry.key.metric]);
    }
  }

  /**
   * (candidate - baseline) / baseline is sound only when the baseline gap is clearly away from 0: a
   * ratio over a denominator whose interval holds 0 has no finite interval. Otherwise it is
   * undefined, with the reason.
   */
  function relativeChange(
    candidate: number,
    baseline: number,
    candidateRounds: Float64Array | null,
    baselineRounds: Float64Array | null,
  ): Estimate {
    const undefinedBecause = (reason: string) =>
      estimateFrom(Number.NaN, null, options.confidenceLevel, reason);
    if (!Number.isFinite(candidate) || !Number.isFinite(baseline)) {
      return undefinedBecause("the gap is undefined for the candidate or the baseline");
    }
    if (baseline === 0) return undefinedBecause("the baseline gap is 0");
    if (baselineRounds !== null) {
      // The baseline gap's own reported interval (gaps use the symmetric one).
      const baselineInterval = symmetricInterval(baseline, baselineRounds, options.confidenceLevel);
      if (baselineInterval.lower === null || baselineInterval.upper === null) {
        return undefinedBecause(
          `the baseline gap has no interval: ${baselineInterval.intervalUndefinedReason}`,
        );
      }
      if (baselineInterval.lower <= 0 && baselineInterval.upper >= 0) {
        return undefinedBecause(
          "the baseline gap's interval includes 0, so a relative change has no sound interval; use the difference",
        );
      }
    }
    return estimateFrom(
      // + 0 turns -0 (no change over a negative baseline gap) into 0.
      (candidate - baseline) / baseline + 0,
      combine(candidateRounds, baselineRounds, (c, b) => (b === 0 ? Number.NaN : (c - b) / b)),
      options.confidenceLevel,
      "",
      "percentile",
    );
  }

  return {
    baseline: options.baselineSource,
    baselineThresholds: options.baselineThresholds,
    macroAuroc: difference(macroAurocSlot(layout, 0)),
    labels: layout.labels.map((label, labelIndex) => {
      const [auroc, accuracy, truePositiveRate, falsePositiveRate, precision] = LABEL_METRICS.map((metric) =>
        difference(labelMetricSlot(layout, 0, labelIndex, metric)),
      );
      return { label, auroc, accuracy, truePositiveRate, falsePositiveRate, precision };
    }),
    subgroups: index.subgroups.map((subgroup) => ({
      dimension: subgroup.dimension,
      name: subgroup.name,
      underdiagnosisRate: difference(underdiagnosisSlot(layout, subgroup.id)),
      overdiagnosisRate: difference(overdiagnosisSlot(layout, subgroup.id)),
    })),
    gaps,
  };
}
