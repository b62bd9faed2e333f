import { CHEXPERT_LABELS, type ChexpertLabel, type CxrRecord, type LabelValue } from "../records.ts";

/**
 * Uncertainty policies of Irvin et al. 2019 (CheXpert): U-Ignore leaves uncertain labels out of the loss
 * (mask 0), U-Zeros counts them negative, U-Ones positive.
 */
export const UNCERTAINTY_POLICIES = ["ignore", "zeros", "ones"] as const;
export type UncertaintyPolicy = (typeof UNCERTAINTY_POLICIES)[number];

export interface TargetOptions {
  policy: UncertaintyPolicy;
  /** Labels to produce, in output order. */
  labels: readonly ChexpertLabel[];
  /**
   * Blank ("not mentioned"): "negative" as in the CheXpert paper and most work since, or "ignore" to
   * mask it like an uncertain label.
   */
  blank: "negative" | "ignore";
}

export const DEFAULT_TARGET_OPTIONS: TargetOptions = {
  policy: "ignore",
  labels: CHEXPERT_LABELS,
  blank: "negative",
};

/** Target and mask of one label value: [target, mask]. */
export function labelTarget(
  value: LabelValue,
  options: Pick<TargetOptions, "policy" | "blank">,
): [number, number] {
  if (value === 1) return [1, 1];
  if (value === 0) return [0, 1];
  if (value === null) return options.blank === "negative" ? [0, 1] : [0, 0];
  if (options.policy === "ones") return [1, 1];
  if (options.policy === "zeros") return [0, 1];
  return [0, 0];
}

export interface LabelTargets {
  /** N x L, row-major: 1 positive, 0 negative. */
  target: Float32Array;
  /** N x L: 1 where the target counts in the loss, 0 where it is masked out. */
  mask: Float32Array;
  labels: readonly ChexpertLabel[];
}

export function labelTargets(
  records: readonly CxrRecord[],
  options: Partial<TargetOptions> = {},
): LabelTargets {
  const resolved = { ...DEFAULT_TARGET_OPTIONS, ...options };
  const labelCount = resolved.labels.length;
  const target = new Float32Array(records.length * labelCount);
  const mask = new Float32Array(records.length * labelCount);
  records.forEach((record, recordIndex) => {
    resolved.labels.forEach((label, labelIndex) => {
      const [value, weight] = labelTarget(record.labels[label], resolved);
      target[recordIndex * labelCount + labelIndex] = value;
      mask[recordIndex * labelCount + labelIndex] = weight;
    });
  });
  return { target, mask, labels: resolved.labels };
}
