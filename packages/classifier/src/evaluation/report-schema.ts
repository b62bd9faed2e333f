/**
 * The evaluation JSON document: its schema is the contract for scripts, the server and the study
 * reports, so it is declared once here (zod), typed from the declaration, and checked in tests.
 * Bump EVALUATION_SCHEMA_VERSION on any change that is not a pure addition.
 */
import * as z from "zod";

export const EVALUATION_SCHEMA_VERSION = 2;

/** A number with its bootstrap interval; value null when undefined, with the reason. */
export const estimateSchema = z.object({
  value: z.number().nullable(),
  lower: z.number().nullable(),
  upper: z.number().nullable(),
  /** Bootstrap rounds in which the statistic was defined. */
  roundsUsed: z.number().int(),
  /** Why value is null. */
  undefinedReason: z.string().nullable(),
  /** Why lower/upper are null although rounds were requested (fewer than 95% of them defined). */
  intervalUndefinedReason: z.string().nullable(),
});
export type Estimate = z.infer<typeof estimateSchema>;

const rocCurveSchema = z.object({
  falsePositiveRate: z.array(z.number()),
  truePositiveRate: z.array(z.number()),
});

const thresholdSchema = z.object({
  label: z.string(),
  value: z.number().nullable(),
  source: z.enum(["validation", "user", "predictions"]),
  /** F1 on the rows the threshold was fitted on; null for user thresholds. */
  f1: z.number().nullable(),
  undefinedReason: z.string().nullable(),
});

const labelResultSchema = z.object({
  label: z.string(),
  positives: z.number().int(),
  negatives: z.number().int(),
  /** Images whose truth is -1 (uncertain) or blank: left out of this label. */
  excluded: z.number().int(),
  threshold: z.number().nullable(),
  auroc: estimateSchema,
  accuracy: estimateSchema,
  truePositiveRate: estimateSchema,
  falsePositiveRate: estimateSchema,
  precision: estimateSchema,
  roc: rocCurveSchema.nullable(),
});

const subgroupLabelSchema = z.object({
  label: z.string(),
  positives: z.number().int(),
  negatives: z.number().int(),
  auroc: estimateSchema,
  truePositiveRate: estimateSchema,
  falsePositiveRate: estimateSchema,
});

const subgroupSchema = z.object({
  dimension: z.string(),
  name: z.string(),
  images: z.number().int(),
  patients: z.number().int(),
  underdiagnosisRate: estimateSchema,
  overdiagnosisRate: estimateSchema,
  macroAuroc: estimateSchema,
  labels: z.array(subgroupLabelSchema),
});

const gapSchema = z.object({
  dimension: z.string(),
  metric: z.string(),
  /** The label for per-label metrics; null for underdiagnosisRate, overdiagnosisRate, macroAuroc. */
  label: z.string().nullable(),
  /** What the denominator that admits a subgroup counts, e.g. "No Finding negatives". */
  denominator: z.string(),
  /** Subgroups that take part: denominator at least the minimum and value defined. */
  subgroups: z.array(z.object({ subgroup: z.string(), denominator: z.number().int(), value: z.number() })),
  /** Subgroups of the dimension left out, with their denominator and why. */
  excluded: z.array(z.object({ subgroup: z.string(), denominator: z.number().int(), reason: z.string() })),
  /** Worst-off minus best-off subgroup, both chosen on the validation split (positive: worse for worst). */
  headline: z.object({
    worst: z.string().nullable(),
    best: z.string().nullable(),
    gap: estimateSchema,
  }),
  /** value(first) - value(second) for every pair of taking-part subgroups (pair metrics only). */
  pairs: z.array(
    z.object({
      first: z.string(),
      second: z.string(),
      /** Marginal symmetric interval (estimate +- bootstrap quantile of |deviation|), paired patient-level bootstrap. */
      difference: estimateSchema,
      /** Simultaneous band over all pairs of this dimension and metric (see simultaneous). */
      simultaneousLower: z.number().nullable(),
      simultaneousUpper: z.number().nullable(),
    }),
  ),
  simultaneous: z
    .object({
      method: z.string(),
      pairs: z.number().int(),
      criticalValue: z.number().nullable(),
      roundsUsed: z.number().int(),
      undefinedReason: z.string().nullable(),
    })
    .nullable(),
});

const differenceSchema = z.object({
  candidate: z.number().nullable(),
  baseline: z.number().nullable(),
  /** candidate minus baseline, with its paired-bootstrap interval. */
  difference: estimateSchema,
});

const comparisonSchema = z.object({
  baseline: z.string(),
  baselineThresholds: z.array(thresholdSchema),
  macroAuroc: differenceSchema,
  labels: z.array(
    z.object({
      label: z.string(),
      auroc: differenceSchema,
      accuracy: differenceSchema,
      truePositiveRate: differenceSchema,
      falsePositiveRate: differenceSchema,
      precision: differenceSchema,
    }),
  ),
  subgroups: z.array(
    z.object({
      dimension: z.string(),
      name: z.string(),
      underdiagnosisRate: differenceSchema,
      overdiagnosisRate: differenceSchema,
    }),
  ),
  /** The same fixed-pair gap for both models: every pair and the candidate's headline pair. */
  gaps: z.array(
    z.object({
      dimension: z.string(),
      metric: z.string(),
      kind: z.enum(["pair", "headline"]),
      /** For a pair: first - second. For the headline: worst - best (sign: worse is positive). */
      first: z.string(),
      second: z.string(),
      gap: differenceSchema,
      /** (candidate gap - baseline gap) / baseline gap: -0.193 reads "19.3% smaller". */
      relativeChange: estimateSchema,
    }),
  ),
});

export const evaluationDocumentSchema = z.object({
  schema: z.literal("cxr-evaluation"),
  schemaVersion: z.literal(EVALUATION_SCHEMA_VERSION),
  inputs: z.object({
    predictions: z.string(),
    images: z.number().int(),
    patients: z.number().int(),
    validation: z.string().nullable(),
    thresholdsFile: z.string().nullable(),
    baseline: z.string().nullable(),
    labels: z.array(z.string()),
    missingLabels: z.array(z.string()),
    ignoredColumns: z.array(z.string()),
  }),
  config: z.object({
    /** A subgroup's value enters gaps only when its own denominator reaches this. */
    minimumDenominator: z.number().int(),
    bootstrapRounds: z.number().int(),
    seed: z.number().int(),
    confidenceLevel: z.number(),
    intervalMethod: z.literal(
      "patient-level bootstrap: percentile intervals for values, symmetric intervals for differences",
    ),
  }),
  /** Label -> threshold, the format `--thresholds` reads back. */
  thresholds: z.record(z.string(), z.number().nullable()),
  thresholdDetails: z.array(thresholdSchema),
  overall: z.object({
    macroAuroc: estimateSchema,
    /** Labels averaged into macroAuroc: both classes reach minimumDenominator on the whole file. */
    macroLabels: z.array(z.string()),
    underdiagnosisRate: estimateSchema,
    overdiagnosisRate: estimateSchema,
    labels: z.array(labelResultSchema),
  }),
  subgroups: z.array(subgroupSchema),
  gaps: z.array(gapSchema),
  /** How the gaps are defined: the simultaneous method and how the headline pair is chosen. */
  gapMethods: z.object({ simultaneous: z.string(), headline: z.string() }),
  comparison: comparisonSchema.nullable(),
  notes: z.array(z.string()),
});
export type EvaluationDocument = z.infer<typeof evaluationDocumentSchema>;
export type GapResult = z.infer<typeof gapSchema>;
export type SubgroupResult = z.infer<typeof subgroupSchema>;
export type LabelResult = z.infer<typeof labelResultSchema>;
export type ThresholdResult = z.infer<typeof thresholdSchema>;
export type Difference = z.infer<typeof differenceSchema>;
export type Comparison = z.infer<typeof comparisonSchema>;
