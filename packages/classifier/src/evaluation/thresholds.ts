/**
 * Decision thresholds per label. The default rule is Seyyed-Kalantari et al.'s: the threshold that
 * maximises F1 on the validation split. Precisely:
 *   - only rows whose truth is 0 or 1 take part;
 *   - candidate thresholds are the distinct predicted probabilities of those rows;
 *   - a row is predicted positive iff probability >= threshold;
 *   - F1 = 2TP / (2TP + FP + FN);
 *   - among candidates with equal F1, the lowest threshold wins;
 *   - with no positive row, F1 is 0 everywhere and the threshold is undefined.
 * F1 values are ratios of integers below 2^53, so equal ratios compare equal in floating point and
 * the tie rule is exact.
 */
import { TRUTH_NEGATIVE, TRUTH_POSITIVE } from "./auroc.ts";

export interface FittedThreshold {
  /** The threshold, or null when the validation rows have no positive. */
  readonly threshold: number | null;
  /** F1 at the threshold on the rows it was fitted on. */
  readonly f1: number | null;
  /** Why the threshold is undefined, when it is. */
  readonly undefinedReason?: string;
}

export function fitF1Threshold(truth: Int8Array, probability: Float64Array): FittedThreshold {
  const known: number[] = [];
  let positives = 0;
  for (let row = 0; row < truth.length; row++) {
    if (truth[row] === TRUTH_POSITIVE) {
      known.push(row);
      positives++;
    } else if (truth[row] === TRUTH_NEGATIVE) {
      known.push(row);
    }
  }
  if (known.length === 0) {
    return { threshold: null, f1: null, undefinedReason: "no row with a known (0 or 1) truth value" };
  }
  if (positives === 0) {
    return { threshold: null, f1: null, undefinedReason: "no positive row, so F1 is 0 at every threshold" };
  }
  known.sort((a, b) => probability[b] - probability[a]);

  let bestThreshold = Number.NaN;
  let bestF1 = -1;
  let truePositives = 0;
  let falsePositives = 0;
  let position = 0;
  // Descending walk: after each run of equal probabilities, everything seen so far is predicted positive.
  while (position < known.length) {
    const candidate = probability[known[position]];
    while (position < known.length && probability[known[position]] === candidate) {
      if (truth[known[position]] === TRUTH_POSITIVE) truePositives++;
      else falsePositives++;
      position++;
    }
    const falseNegatives = positives - truePositives;
    const f1 = (2 * truePositives) / (2 * truePositives + falsePositives + falseNegatives);
    // ">=" because later candidates are lower: ties go to the lowest threshold.
    if (f1 >= bestF1) {
      bestF1 = f1;
      bestThreshold = candidate;
    }
  }
  return { threshold: bestThreshold, f1: bestF1 };
}

/**
 * Parses a thresholds file: a JSON object mapping label names to thresholds in [0, 1], either at the
 * top level or under a "thresholds" key (so an earlier evaluation.json can be reused as is).
 * Label names match case-insensitively against `knownLabels`.
 */
export function parseThresholdsJson(
  text: string,
  source: string,
  knownLabels: readonly string[],
): Map<string, number> {
  let document: unknown;
  try {
    document = JSON.parse(text);
  } catch (error) {
    throw new Error(`${source}: not valid JSON (${error instanceof Error ? error.message : String(error)})`);
  }
  const isObject = (value: unknown): value is Record<string, unknown> =>
    typeof value === "object" && value !== null && !Array.isArray(value);
  if (!isObject(document)) throw new Error(`${source}: expected a JSON object of label -> threshold`);
  const mapping = isObject(document["thresholds"]) ? document["thresholds"] : document;

  const byLowerCase = new Map(knownLabels.map((label) => [label.toLowerCase(), label]));
  const thresholds = new Map<string, number>();
  for (const [key, value] of Object.entries(mapping)) {
    const label = byLowerCase.get(key.trim().toLowerCase());
    if (label === undefined) {
      throw new Error(`${source}: unknown label "${key}" (expected one of: ${knownLabels.join(", ")})`);
    }
    if (value === null) continue; // an undefined threshold in an earlier evaluation.json
    if (typeof value !== "number" || !Number.isFinite(value) || value < 0 || value > 1) {
      throw new Error(
        `${source}: threshold for "${key}" must be a number in [0, 1], got ${JSON.stringify(value)}`,
      );
    }
    thresholds.set(label, value);
  }
  return thresholds;
}
