/**
 * The library entry point: `evaluatePredictions` turns a predictions table (plus validation data or
 * thresholds, and optionally a baseline) into the evaluation document. The CLI and classifier
 * training both call it, so every reported number comes from this one path.
 */
import { rocCurve } from "./auroc.ts";
import { bootstrapStatistics, percentileInterval, replicatesOf } from "./bootstrap.ts";
import { alignBaseline, buildComparison } from "./compare.ts";
import {
  DENOMINATOR_OF,
  type GapPlanEntry,
  gapResults,
  HEADLINE_SELECTION,
  PAIR_METRICS,
  planGaps,
  SIMULTANEOUS_METHOD,
  type ValidationLookup,
} from "./gaps.ts";
import type { PredictionTable } from "./predictions.ts";
import {
  type Estimate,
  EVALUATION_SCHEMA_VERSION,
  type EvaluationDocument,
  type LabelResult,
  type SubgroupResult,
  type ThresholdResult,
} from "./report-schema.ts";
import {
  computeStatistics,
  createLayout,
  createStatisticsScratch,
  labelMetricSlot,
  type MetricKey,
  macroAurocSlot,
  metricSlot,
  NO_FINDING,
  overdiagnosisSlot,
  type PreparedModel,
  prepareModel,
  type StatisticsLayout,
  underdiagnosisSlot,
} from "./statistics.ts";
import { buildSubgroupIndex, type SubgroupIndex } from "./subgroups.ts";
import { fitF1Threshold } from "./thresholds.ts";

export interface EvaluationConfig {
  /**
   * A subgroup's value enters gaps only when its own denominator reaches this (No Finding negatives
   * for underdiagnosis, positives for overdiagnosis, the smaller class for AUROC).
   */
  readonly minimumDenominator: number;
  /** Patient-level bootstrap rounds; 0 skips intervals. */
  readonly bootstrapRounds: number;
  readonly seed: number;
  readonly confidenceLevel: number;
  /** ROC curves in the document are thinned to points at least this far apart (L1 in ROC space). */
  readonly rocResolution: number;
}

export const DEFAULT_EVALUATION_CONFIG: EvaluationConfig = {
  minimumDenominator: 50,
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
  requireInteger("minimumDenominator", 1);
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

  // Macro AUROC averages the labels with at least the minimum denominator of each class on the whole
  // table: a label with 2 positives is undefined in a large share of bootstrap rounds and too noisy.
  const overallCounts = model.rankings.map((ranked) => {
    let positives = 0;
    for (let position = 0; position < ranked.count; position++) positives += ranked.sortedPositive[position];
    return { positives, negatives: ranked.count - positives };
  });
  const macroLabelIndices = table.labels
    .map((_, labelIndex) => labelIndex)
    .filter(
      (labelIndex) =>
        overallCounts[labelIndex].positives >= config.minimumDenominator &&
        overallCounts[labelIndex].negatives >= config.minimumDenominator,
    );
  const layout = createLayout(table.labels, index, macroLabelIndices);

  const point = computePointEstimate(model, layout);

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
    baselinePoint = computePointEstimate(baselineModel, layout);
  }

  const rounds = config.bootstrapRounds;
  const models = baselineModel ? [model, baselineModel] : [model];
  const replicates =
    rounds > 0 ? bootstrapStatistics(models, layout, { rounds, seed: config.seed }) : models.map(() => null);

  const estimateAt = (slot: number, reason: () => string): Estimate => {
    const value = point.values[slot];
    if (Number.isNaN(value)) {
      return {
        value: null,
        lower: null,
        upper: null,
        roundsUsed: 0,
        undefinedReason: reason(),
        intervalUndefinedReason: null,
      };
    }
    const matrix = replicates[0];
    if (matrix === null) {
      return {
        value,
        lower: null,
        upper: null,
        roundsUsed: 0,
        undefinedReason: null,
        intervalUndefinedReason: null,
      };
    }
    return {
      value,
      ...percentileInterval(replicatesOf(matrix, slot, rounds), config.confidenceLevel),
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

  const plan = planGaps({
    layout,
    index,
    counts: point.counts,
    pointValues: point.values,
    minimumDenominator: config.minimumDenominator,
    validation: input.validation
      ? validationLookup(input.validation, table, thresholdResults, macroLabelIndices)
      : null,
    noValidationReason:
      "no validation split: the worst-off and best-off subgroups must be chosen on other data than the " +
      "evaluated predictions (pass a validation file); see the pairwise differences",
    explain: (key, subgroupId) => explain.metric(key, subgroupId),
  });
  const gaps = gapResults({
    plan,
    layout,
    index,
    pointValues: point.values,
    replicates: replicates[0],
    rounds,
    confidenceLevel: config.confidenceLevel,
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
      minimumDenominator: config.minimumDenominator,
      bootstrapRounds: rounds,
      seed: config.seed,
      confidenceLevel: config.confidenceLevel,
      intervalMethod:
        "patient-level bootstrap: percentile intervals for values, symmetric intervals for differences",
    },
    thresholds: thresholdsByLabel,
    thresholdDetails: thresholdResults,
    overall: {
      macroAuroc: estimateAt(
        macroAurocSlot(layout, 0),
        () =>
          `no label has ${config.minimumDenominator} positives and ${config.minimumDenominator} negatives on the whole file`,
      ),
      macroLabels: macroLabelIndices.map((labelIndex) => table.labels[labelIndex]),
      underdiagnosisRate: subgroups[0].underdiagnosisRate,
      overdiagnosisRate: subgroups[0].overdiagnosisRate,
      labels,
    },
    subgroups,
    gaps,
    gapMethods: { simultaneous: SIMULTANEOUS_METHOD, headline: HEADLINE_SELECTION },
    comparison:
      baselineModel && baselinePoint && input.baseline
        ? buildComparison({
            baselineSource: input.baseline.predictions.source,
            baselineThresholds,
            layout,
            index,
            plan,
            candidatePoint: point.values,
            baselinePoint: baselinePoint.values,
            candidateReplicates: replicates[0],
            baselineReplicates: replicates[1],
            rounds,
            confidenceLevel: config.confidenceLevel,
          })
        : null,
    notes: collectNotes(input, table, thresholdResults, plan, index, config),
  };
  return document;
}

function collectNotes(
  input: EvaluationInput,
  table: PredictionTable,
  thresholds: ThresholdResult[],
  plan: readonly GapPlanEntry[],
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
  for (const metric of PAIR_METRICS) {
    const small: string[] = [];
    const undefinedValues: string[] = [];
    for (const entry of plan) {
      if (entry.key.metric !== metric) continue;
      const name = (id: number) => index.subgroups[id].name;
      const below = entry.excluded.filter((excluded) => excluded.reason.includes("below the minimum"));
      if (below.length > 0)
        small.push(
          `${entry.dimension}: ${below.map((excluded) => `${name(excluded.subgroup)} (${excluded.denominator})`).join(", ")}`,
        );
      const other = entry.excluded.filter((excluded) => !excluded.reason.includes("below the minimum"));
      if (other.length > 0)
        undefinedValues.push(
          `${entry.dimension}: ${other.map((excluded) => name(excluded.subgroup)).join(", ")}`,
        );
    }
    if (small.length > 0) {
      notes.push(
        `${METRIC_NAMES[metric]} gaps leave out subgroups with fewer than ${config.minimumDenominator} ` +
          `${DENOMINATOR_OF[metric]}: ${small.join("; ")}.`,
      );
    }
    if (undefinedValues.length > 0) {
      notes.push(
        `${METRIC_NAMES[metric]} gaps leave out subgroups whose value is undefined: ${undefinedValues.join("; ")}.`,
      );
    }
  }
  if (config.bootstrapRounds === 0) notes.push("Bootstrap was switched off: no intervals.");
  return notes;
}

const METRIC_NAMES: Record<string, string> = {
  underdiagnosisRate: "Underdiagnosis",
  overdiagnosisRate: "Overdiagnosis",
  macroAuroc: "Macro AUROC",
};

/**
 * The validation split's subgroup values, found by (dimension, name), with the evaluated model's
 * thresholds: used only to choose which pair of subgroups is the headline gap.
 */
function validationLookup(
  validation: PredictionTable,
  table: PredictionTable,
  thresholds: readonly ThresholdResult[],
  macroLabelIndices: readonly number[],
): ValidationLookup {
  const labelInValidation = table.labels.map((label) => validation.labels.indexOf(label));
  const validationThresholds = validation.labels.map((label) => {
    const labelIndex = table.labels.indexOf(label);
    return labelIndex < 0 ? null : thresholds[labelIndex].value;
  });
  const validationIndex = buildSubgroupIndex(validation);
  const validationMacro = macroLabelIndices.map((labelIndex) => labelInValidation[labelIndex]);
  const validationLayout = createLayout(
    validation.labels,
    validationIndex,
    validationMacro.some((labelIndex) => labelIndex < 0) ? [] : validationMacro,
  );
  const values = computePointEstimate(
    prepareModel(validation, validationIndex, validationThresholds),
    validationLayout,
  ).values;
  const idOf = new Map(
    validationIndex.subgroups.map((subgroup) => [`${subgroup.dimension}/${subgroup.name}`, subgroup.id]),
  );
  return (key, dimension, name) => {
    const id = idOf.get(`${dimension}/${name}`);
    if (id === undefined) return Number.NaN;
    const labelIndex = key.labelIndex < 0 ? -1 : labelInValidation[key.labelIndex];
    if (key.labelIndex >= 0 && labelIndex < 0) return Number.NaN;
    return values[metricSlot(validationLayout, { metric: key.metric, labelIndex }, id)];
  };
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

  metric(key: MetricKey, subgroup: number): string {
    switch (key.metric) {
      case "underdiagnosisRate":
        return this.noFindingRate(subgroup, "falsePositiveRate");
      case "overdiagnosisRate":
        return this.noFindingRate(subgroup, "truePositiveRate");
      case "macroAuroc":
        return this.macroAuroc(subgroup);
      case "auroc":
        return this.auroc(subgroup, key.labelIndex);
      default:
        return this.rate(subgroup, key.labelIndex, key.metric);
    }
  }

  macroAuroc(subgroup: number): string {
    if (this.layout.macroLabelIndices.length === 0)
      return "no label has enough of both classes on the whole file";
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
