/**
 * Comparing a model against a baseline on the same images: the baseline's rows are matched to the
 * candidate's (by image_id when both files have it, otherwise by position) and checked to describe
 * the same patients and truth, then both are resampled with the same patient draws (paired
 * bootstrap), so the interval of a difference reflects only the models, not the sample.
 */
import type { ChexpertLabel } from "@cxr/data";
import { percentileInterval, replicatesOf } from "./bootstrap.ts";
import { describeRow, type PredictionRow, type PredictionTable } from "./predictions.ts";
import type { Comparison, Difference, Estimate, ThresholdResult } from "./report-schema.ts";
import {
  gapSlot,
  LABEL_METRICS,
  labelMetricSlot,
  macroAurocSlot,
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

/** Paired-bootstrap differences (candidate minus baseline) for the headline numbers and every gap. */
export function buildComparison(options: {
  baselineSource: string;
  baselineThresholds: ThresholdResult[];
  layout: StatisticsLayout;
  index: SubgroupIndex;
  candidatePoint: Float64Array;
  baselinePoint: Float64Array;
  candidateReplicates: Float64Array;
  baselineReplicates: Float64Array;
  rounds: number;
  confidenceLevel: number;
}): Comparison {
  const { layout, index, candidatePoint, baselinePoint, candidateReplicates, baselineReplicates, rounds } =
    options;
  const pairedReplicates = (slot: number, combine: (candidate: number, baseline: number) => number) => {
    const candidate = replicatesOf(candidateReplicates, slot, rounds);
    const baseline = replicatesOf(baselineReplicates, slot, rounds);
    return Float64Array.from(candidate, (value, round) => combine(value, baseline[round]));
  };
  const toEstimate = (value: number, replicates: Float64Array, reason: string): Estimate => {
    if (!Number.isFinite(value)) {
      return { value: null, lower: null, upper: null, roundsUsed: 0, undefinedReason: reason };
    }
    return { value, ...percentileInterval(replicates, options.confidenceLevel), undefinedReason: null };
  };
  const difference = (slot: number): Difference => {
    const candidate = candidatePoint[slot];
    const baseline = baselinePoint[slot];
    return {
      candidate: Number.isNaN(candidate) ? null : candidate,
      baseline: Number.isNaN(baseline) ? null : baseline,
      difference: toEstimate(
        candidate - baseline,
        pairedReplicates(slot, (c, b) => c - b),
        "undefined for the candidate or the baseline",
      ),
    };
  };
  const relativeChange = (c: number, b: number): number => (b === 0 ? Number.NaN : (c - b) / b);

  const labelName = (labelIndex: number): ChexpertLabel | null =>
    labelIndex < 0 ? null : layout.labels[labelIndex];
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
    gaps: layout.gaps.map((gap, gapIndex) => {
      const slot = gapSlot(layout, gapIndex);
      return {
        dimension: gap.dimension,
        metric: gap.metric,
        label: labelName(gap.labelIndex),
        gap: difference(slot),
        relativeChange: toEstimate(
          relativeChange(candidatePoint[slot], baselinePoint[slot]),
          pairedReplicates(slot, relativeChange),
          "undefined: a gap is undefined, or the baseline gap is 0",
        ),
      };
    }),
  };
}
