/**
 * The library entry point: `evaluatePredictions` turns a predictions table (plus validation data or
 * thresholds, and optionally a baseline) into the evaluation document. The CLI and classifier
 * training both call it, so every reported number comes from this one path.
 */
import { rocCurve } from "./auroc.ts";
import { bootstrapStatistics, percentileInterval, replicatesOf } from "./bootstrap.ts";
import { alignBaseline, buildComparison } from "./compare.ts";
import type { PredictionTable } from "./predictions.ts";
import {
  type Estimate,
  EVALUATION_SCHEMA_VERSION,
  type EvaluationDocument,
  type GapResult,
  type LabelResult,
  type SubgroupResult,
  type ThresholdResult,
} from "./report-schema.ts";
import {
  chooseGapMembers,
  computeStatistics,
  createLayout,
  createStatisticsScratch,
  gapOf,
  gapSlot,
  labelMetricSlot,
  macroAurocSlot,
  NO_FINDING,
  overdiagnosisSlot,
  type PreparedModel,
  prepareModel,
  type StatisticsLayout,
  subgroupValueSlot,
  underdiagnosisSlot,
} from "./statistics.ts";
import { buildSubgroupIndex, type SubgroupIndex } from "./subgroups.ts";
import { fitF1Threshold } from "./thresholds.ts";

export interface EvaluationConfig {
  /** Subgroups with fewer images are listed but kept out of gaps. */
  readonly minimumSubgroupSize: number;
  /** Patient-level bootstrap rounds; 0 skips intervals. */
  readonly bootstrapRounds: number;
  readonly seed: number;
  readonly confidenceLevel: number;
  /** ROC curves in the document are thinned to points at least this far apart (L1 in ROC space). */
  readonly rocResolution: number;
}

export const DEFAULT_EVALUATION_CONFIG: EvaluationConfig = {
  minimumSubgroupSize: 50,
  bootstrapRounds: 1000,
  seed: 20211210,
  confidenceLevel: 0.95,
  rocResolution: 0.002,
};

/** One model's predictions and where its decision thresholds come from. */
export interface ModelInput {
  readonly predictions: PredictionTable;
  /** Fit F1-optimal thresholds on this table (Seyyed-Kalantari's rule). */
  readonly validation?: PredictionTable | null;
  /** Thresholds given by the user, by label; exclusive with `validation`. */
  readonly thresholds?: ReadonlyMap<string, number> | null;
  /** Where `thresholds` came from, for the document. */
  readonly thresholdsSource?: string | null;
}

export interface EvaluationInput extends ModelInput {
  /** Predictions of another model on the same images, compared by paired bootstrap. */
  readonly baseline?: ModelInput | null;
}

export function resolveConfig(overrides: Partial<EvaluationConfig> = {}): EvaluationConfig {
  const config = { ...DEFAULT_EVALUATION_CONFIG, ...overrides };
  const requireInteger = (name: keyof EvaluationConfig, minimum: number) => {
    const value = config[name];
    if (!Number.isSafeInteger(value) || value < minimum) {
      throw new Error(`${name} must be an integer >= ${minimum}, got ${value}`);
    }
  };
  requireInteger("minimumSubgroupSize", 1);
  requireInteger("bootstrapRounds", 0);
  requireInteger("seed", 0);
  if (!(config.confidenceLevel > 0 && config.confidenceLevel < 1)) {
    throw new Error(`confidenceLevel must be in (0, 1), got ${config.confidenceLevel}`);
  }
  if (!(config.rocResolution >= 0 && config.rocResolution < 1)) {
    throw new Error(`rocResolution must be in [0, 1), got ${config.rocResolution}`);
  }
  return config;
}

/** Decision thresholds for one model, with where each came from. */
export function resolveThresholds(model: ModelInput): ThresholdResult[] {
  const { predictions, validation, thresholds } = model;
  if (validation && thresholds) {
    throw new Error("give either validation predictions or thresholds, not both");
  }
  if (thresholds) {
    return predictions.labels.map((label) => {
      const value = thresholds.get(label);
      if (value === undefined) {
        throw new Error(`${model.thresholdsSource ?? "thresholds"}: no threshold for label "${label}"`);
      }
      return { label, value, source: "user", f1: null, undefinedReason: null };
    });
  }
  const fitOn = validation ?? predictions;
  const missing = predictions.labels.filter((label) => !fitOn.labels.includes(label));
  if (missing.length > 0) {
    throw new Error(`${fitOn.source}: no columns for ${missing.join(", ")}, which ${predictions.source} has`);
  }
  return predictions.labels.map((label) => {
    const labelIndex = fitOn.labels.indexOf(label);
    const fitted = fitF1Threshold(fitOn.truth[labelIndex], fitOn.probability[labelIndex]);
    return {
      label,
      value: fitted.threshold,
      source: validation ? "validation" : "predictions",
      f1: fitted.f1,
      undefinedReason: fitted.undefinedReason ? `${fitOn.source}: ${fitted.undefinedReason}` : null,
    };
  });
}

/** Unweighted per-(subgroup, label) counts, kept to explain undefined values. */
interface KnownCounts {
  positives: Float64Array[];
  negatives: Float64Array[];
  predictedPositives: Float64Array[];
}

interface PointEstimate {
  values: Float64Array;
  counts: KnownCounts;
}

function computePointEstimate(model: PreparedModel, layout: StatisticsLayout): PointEstimate {
  const values = new Float64Array(layout.size);
  const counts: KnownCounts = { positives: [], negatives: [], predictedPositives: [] };
  const ones = new Uint8Array(model.index.patientCount).fill(1);
  computeStatistics(
    model,
    layout,
    ones,
    createStatisticsScratch(layout.subgroupCount),
    values,
    (labelIndex, sums) => {
      counts.positives[labelIndex] = sums.positives.slice();
      counts.negatives[labelIndex] = sums.negatives.slice();
      counts.predictedPositives[labelIndex] = Float64Array.from(
        sums.positives,
        (positives, group) =>
          positives -
          sums.positivesBelowThreshold[group] +
          sums.negatives[group] -
          sums.negativesBelowThreshold[group],
      );
    },
  );
  return { values, counts };
}

/** Evaluates a model's predictions; see packages/classifier/README.md for the document's fields. */
export function evaluatePredictions(
  input: EvaluationInput,
  configOverrides: Partial<EvaluationConfig> = {},
): EvaluationDocument {
  const config = resolveConfig(configOverrides);
  const table = input.predictions;
  const thresholdResults = resolveThresholds(input);
  const index = buildSubgroupIndex(table);
  const model = prepareModel(
    table,
    index,
    thresholdResults.map((result) => result.value),
  );

  // Macro AUROC averages the labels whose AUROC is defined on the whole table (both classes present).
  const overallCounts = model.rankings.map((ranked) => {
    let positives = 0;
    for (let position = 0; position < ranked.count; position++) positives += ranked.sortedPositive[position];
    return { positives, negatives: ranked.count - positives };
  });
  const macroLabelIndices = table.labels
    .map((_, labelIndex) => labelIndex)
    .filter(
      (labelIndex) => overallCounts[labelIndex].positives > 0 && overallCounts[labelIndex].negatives > 0,
    );
  const layout = createLayout(table.labels, index, macroLabelIndices);

  const point = computePointEstimate(model, layout);
  model.gapMembers = chooseGapMembers(point.values, layout, index, config.minimumSubgroupSize);
  // Recompute with the gap members chosen, so gap slots hold their values.
  const pointWithGaps = computePointEstimate(model, layout);

  let baselineModel: PreparedModel | null = null;
  let baselinePoint: PointEstimate | null = null;
  let baselineThresholds: ThresholdResult[] = [];
  if (input.baseline) {
    const aligned = alignBaseline(table, input.baseline.predictions);
    baselineThresholds = resolveThresholds({ ...input.baseline, predictions: aligned });
    baselineModel = prepareModel(
      aligned,
      index,
      baselineThresholds.map((result) => result.value),
    );
    const baselineFirst = computePointEstimate(baselineModel, layout);
    baselineModel.gapMembers = chooseGapMembers(
      baselineFirst.values,
      layout,
      index,
      config.minimumSubgroupSize,
    );
    baselinePoint = computePointEstimate(baselineModel, layout);
  }

  const rounds = config.bootstrapRounds;
  const models = baselineModel ? [model, baselineModel] : [model];
  const replicates =
    rounds > 0
      ? bootstrapStatistics(models, layout, { rounds, seed: config.seed })
      : models.map(() => new Float64Array(0));

  const estimateAt = (slot: number, reason: () => string): Estimate => {
    const value = pointWithGaps.values[slot];
    if (Number.isNaN(value))
      return { value: null, lower: null, upper: null, roundsUsed: 0, undefinedReason: reason() };
    if (rounds === 0) return { value, lower: null, upper: null, roundsUsed: 0, undefinedReason: null };
    return {
      value,
      ...percentileInterval(replicatesOf(replicates[0], slot, rounds), config.confidenceLevel),
      undefinedReason: null,
    };
  };
  const explain = new UndefinedReasons(layout, index, point.counts, thresholdResults);

  const labels: LabelResult[] = table.labels.map((label, labelIndex) => {
    const slot = (metric: Parameters<typeof labelMetricSlot>[3]) =>
      labelMetricSlot(layout, 0, labelIndex, metric);
    const roc = rocCurve(model.rankings[labelIndex]);
    const { positives, negatives } = overallCounts[labelIndex];
    return {
      label,
      positives,
      negatives,
      excluded: table.rows.length - positives - negatives,
      threshold: thresholdResults[labelIndex].value,
      auroc: estimateAt(slot("auroc"), () => explain.auroc(0, labelIndex)),
      accuracy: estimateAt(slot("accuracy"), () => explain.rate(0, labelIndex, "accuracy")),
      truePositiveRate: estimateAt(slot("truePositiveRate"), () =>
        explain.rate(0, labelIndex, "truePositiveRate"),
      ),
      falsePositiveRate: estimateAt(slot("falsePositiveRate"), () =>
        explain.rate(0, labelIndex, "falsePositiveRate"),
      ),
      precision: estimateAt(slot("precision"), () => explain.rate(0, labelIndex, "precision")),
      roc: positives > 0 && negatives > 0 ? thinRocCurve(roc, config.rocResolution) : null,
    };
  });

  const subgroups: SubgroupResult[] = index.subgroups.map((subgroup) => ({
    dimension: subgroup.dimension,
    name: subgroup.name,
    images: subgroup.imageCount,
    patients: subgroup.patientCount,
    inGaps: subgroup.imageCount >= config.minimumSubgroupSize,
    underdiagnosisRate: estimateAt(underdiagnosisSlot(layout, subgroup.id), () =>
      explain.noFindingRate(subgroup.id, "falsePositiveRate"),
    ),
    overdiagnosisRate: estimateAt(overdiagnosisSlot(layout, subgroup.id), () =>
      explain.noFindingRate(subgroup.id, "truePositiveRate"),
    ),
    macroAuroc: estimateAt(macroAurocSlot(layout, subgroup.id), () => explain.macroAuroc(subgroup.id)),
    labels: table.labels.map((label, labelIndex) => ({
      label,
      positives: point.counts.positives[labelIndex][subgroup.id],
      negatives: point.counts.negatives[labelIndex][subgroup.id],
      auroc: estimateAt(labelMetricSlot(layout, subgroup.id, labelIndex, "auroc"), () =>
        explain.auroc(subgroup.id, labelIndex),
      ),
      truePositiveRate: estimateAt(labelMetricSlot(layout, subgroup.id, labelIndex, "truePositiveRate"), () =>
        explain.rate(subgroup.id, labelIndex, "truePositiveRate"),
      ),
      falsePositiveRate: estimateAt(
        labelMetricSlot(layout, subgroup.id, labelIndex, "falsePositiveRate"),
        () => explain.rate(subgroup.id, labelIndex, "falsePositiveRate"),
      ),
    })),
  }));

  const gaps: GapResult[] = layout.gaps.map((gap, gapIndex) => {
    const members = model.gapMembers[gapIndex];
    const ends = gapOf(pointWithGaps.values, layout, gap, members);
    const end = (subgroup: number) =>
      subgroup < 0
        ? null
        : {
            subgroup: index.subgroups[subgroup].name,
            value: pointWithGaps.values[subgroupValueSlot(layout, gap, subgroup)],
          };
    const memberSet = new Set(members);
    return {
      dimension: gap.dimension,
      metric: gap.metric,
      label: gap.labelIndex < 0 ? null : table.labels[gap.labelIndex],
      gap: estimateAt(
        gapSlot(layout, gapIndex),
        () =>
          `fewer than two eligible subgroups (${gap.dimension} subgroups need at least ` +
          `${config.minimumSubgroupSize} images and a defined value)`,
      ),
      highest: end(ends.highest),
      lowest: end(ends.lowest),
      subgroups: members.map((id) => index.subgroups[id].name),
      excluded: index.subgroups
        .filter((subgroup) => subgroup.dimension === gap.dimension && !memberSet.has(subgroup.id))
        .map((subgroup) => ({
          subgroup: subgroup.name,
          reason:
            subgroup.imageCount < config.minimumSubgroupSize
              ? `${subgroup.imageCount} images, below the minimum of ${config.minimumSubgroupSize}`
              : "value undefined",
        })),
    };
  });

  const thresholdsByLabel: Record<string, number | null> = {};
  for (const result of thresholdResults) thresholdsByLabel[result.label] = result.value;

  const document: EvaluationDocument = {
    schema: "cxr-evaluation",
    schemaVersion: EVALUATION_SCHEMA_VERSION,
    inputs: {
      predictions: table.source,
      images: table.rows.length,
      patients: index.patientCount,
      validation: input.validation?.source ?? null,
      thresholdsFile: input.thresholds ? (input.thresholdsSource ?? "given in memory") : null,
      baseline: input.baseline?.predictions.source ?? null,
      labels: [...table.labels],
      missingLabels: [...table.missingLabels],
      ignoredColumns: [...table.ignoredColumns],
    },
    config: {
      minimumSubgroupSize: config.minimumSubgroupSize,
      bootstrapRounds: rounds,
      seed: config.seed,
      confidenceLevel: config.confidenceLevel,
      intervalMethod: "percentile, patient-level bootstrap",
    },
    thresholds: thresholdsByLabel,
    thresholdDetails: thresholdResults,
    overall: {
      macroAuroc: estimateAt(macroAurocSlot(layout, 0), () => "no label has both classes on the whole file"),
      macroLabels: macroLabelIndices.map((labelIndex) => table.labels[labelIndex]),
      underdiagnosisRate: subgroups[0].underdiagnosisRate,
      overdiagnosisRate: subgroups[0].overdiagnosisRate,
      labels,
    },
    subgroups,
    gaps,
    comparison:
      baselineModel && baselinePoint && input.baseline
        ? buildComparison({
            baselineSource: input.baseline.predictions.source,
            baselineThresholds,
            layout,
            index,
            candidatePoint: pointWithGaps.values,
            baselinePoint: baselinePoint.values,
            candidateReplicates: replicates[0],
            baselineReplicates: replicates[1],
            rounds,
            confidenceLevel: config.confidenceLevel,
          })
        : null,
    notes: collectNotes(input, table, thresholdResults, index, config),
  };
  return document;
}

function collectNotes(
  input: EvaluationInput,
  table: PredictionTable,
  thresholds: ThresholdResult[],
  index: SubgroupIndex,
  config: EvaluationConfig,
): string[] {
  const notes: string[] = [];
  if (table.missingLabels.length > 0)
    notes.push(`Labels missing from the predictions: ${table.missingLabels.join(", ")}.`);
  if (!table.labels.includes(NO_FINDING)) {
    notes.push(`No "${NO_FINDING}" columns: underdiagnosis and overdiagnosis rates are undefined.`);
  }
  if (thresholds.some((result) => result.source === "predictions")) {
    notes.push(
      "No validation file or thresholds were given, so thresholds were fitted on the evaluated predictions " +
        "themselves; threshold-based rates are optimistic. Pass --validation for Seyyed-Kalantari's protocol.",
    );
  }
  if (input.baseline && !input.baseline.validation && !input.baseline.thresholds) {
    notes.push("The baseline's thresholds were fitted on its own predictions (no baseline validation file).");
  }
  if (table.ignoredColumns.length > 0) notes.push(`Ignored columns: ${table.ignoredColumns.join(", ")}.`);
  const small = index.subgroups.filter((subgroup) => subgroup.imageCount < config.minimumSubgroupSize);
  if (small.length > 0) {
    notes.push(
      `${small.length} subgroup(s) have fewer than ${config.minimumSubgroupSize} images and are kept out of gaps: ` +
        small.map((subgroup) => `${subgroup.name} (${subgroup.imageCount})`).join(", ") +
        ".",
    );
  }
  if (config.bootstrapRounds === 0) notes.push("Bootstrap was switched off: no intervals.");
  return notes;
}

/**
 * Words for why a value is undefined, from the unweighted counts. Each reason is a short phrase,
 * optionally followed by " (details)"; the Markdown report prints the short phrase.
 */
class UndefinedReasons {
  constructor(
    private readonly layout: StatisticsLayout,
    private readonly index: SubgroupIndex,
    private readonly counts: KnownCounts,
    private readonly thresholds: ThresholdResult[],
  ) {}

  private context(subgroup: number, labelIndex: number): string {
    const label = this.layout.labels[labelIndex];
    return subgroup === 0 ? `(${label})` : `(${label} in ${this.index.subgroups[subgroup].name})`;
  }

  auroc(subgroup: number, labelIndex: number): string {
    const positives = this.counts.positives[labelIndex][subgroup];
    const negatives = this.counts.negatives[labelIndex][subgroup];
    const context = this.context(subgroup, labelIndex);
    if (positives === 0 && negatives === 0) return `no known true values ${context}`;
    return `one class only, no ${positives === 0 ? "positives" : "negatives"} ${context}`;
  }

  rate(
    subgroup: number,
    labelIndex: number,
    metric: "accuracy" | "truePositiveRate" | "falsePositiveRate" | "precision",
  ) {
    const threshold = this.thresholds[labelIndex];
    const context = this.context(subgroup, labelIndex);
    if (threshold.value === null)
      return `no threshold ${context.slice(0, -1)}: ${threshold.undefinedReason})`;
    switch (metric) {
      case "accuracy":
        return `no known true values ${context}`;
      case "truePositiveRate":
        return `no positives ${context}`;
      case "falsePositiveRate":
        return `no negatives ${context}`;
      case "precision":
        return this.counts.predictedPositives[labelIndex][subgroup] === 0
          ? `nothing predicted positive ${context}`
          : `no known true values ${context}`;
    }
  }

  noFindingRate(subgroup: number, metric: "truePositiveRate" | "falsePositiveRate"): string {
    const noFinding = this.layout.noFindingIndex;
    if (noFinding < 0) return `no "${NO_FINDING}" columns`;
    return this.rate(subgroup, noFinding, metric);
  }

  macroAuroc(subgroup: number): string {
    if (this.layout.macroLabelIndices.length === 0) return "no label has both classes on the whole file";
    const undefinedLabels = this.layout.macroLabelIndices
      .filter((labelIndex) => {
        const positives = this.counts.positives[labelIndex][subgroup];
        const negatives = this.counts.negatives[labelIndex][subgroup];
        return positives === 0 || negatives === 0;
      })
      .map((labelIndex) => this.layout.labels[labelIndex]);
    return `AUROC undefined for ${undefinedLabels.join(", ")} (in ${this.index.subgroups[subgroup].name})`;
  }
}

function thinRocCurve(
  curve: { falsePositiveRate: number[]; truePositiveRate: number[] },
  resolution: number,
): { falsePositiveRate: number[]; truePositiveRate: number[] } {
  const falsePositiveRate: number[] = [];
  const truePositiveRate: number[] = [];
  const last = curve.falsePositiveRate.length - 1;
  for (let point = 0; point <= last; point++) {
    const x = curve.falsePositiveRate[point];
    const y = curve.truePositiveRate[point];
    const kept = falsePositiveRate.length - 1;
    const farEnough =
      kept < 0 || Math.abs(x - falsePositiveRate[kept]) + Math.abs(y - truePositiveRate[kept]) >= resolution;
    if (point === 0 || point === last || farEnough) {
      falsePositiveRate.push(x);
      truePositiveRate.push(y);
    }
  }
  return { falsePositiveRate, truePositiveRate };
}
