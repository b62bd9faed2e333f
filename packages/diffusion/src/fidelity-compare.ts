/**
 * Two sets of weights, or two ways of sampling, compared on the same images: fidelity reports measured
 * with the same noise and prompt settings (prompts, seed, n, batch) start image i of each class from the
 * same noise and prompt, so the images pair up, and a paired bootstrap (the same image indices drawn for
 * both in every round) decides a difference in AUROC that two unpaired intervals, each as wide as the
 * image-to-image spread, cannot. The sampler settings (sampler, steps, spacing, guidance and its rescale) may differ:
 * the comparison then measures them, and says which differ.
 */

import { Rng } from "@cxr/data";
import {
  AUROC_BOOTSTRAP_ROUNDS,
  auroc,
  FIDELITY_MEASURES,
  type FidelityMeasureName,
  type FidelityReport,
  intervalVerdict,
  percentileInterval,
  signedFixed,
} from "./fidelity.ts";

/** One class's per-image values in generation order (null: not measured) for each of the two models. */
export interface PairedClasses {
  positives: readonly (number | null)[];
  negatives: readonly (number | null)[];
}

export interface PairedAurocDifference {
  aurocA: number;
  aurocB: number;
  /** aurocA - aurocB. */
  difference: number;
  /** 95% percentile interval of the difference over paired bootstrap rounds. */
  interval: [number, number];
}

const measured = (values: readonly (number | null)[], indices: ArrayLike<number>): number[] => {
  const out: number[] = [];
  for (let k = 0; k < indices.length; k++) {
    const value = values[indices[k]];
    if (value !== null) out.push(value);
  }
  return out;
};

/**
 * AUROC(a) - AUROC(b) where image i of a class in `a` and in `b` are a pair (same noise, same prompt),
 * with a paired percentile bootstrap: every round draws n indices with replacement per class and
 * takes both models' AUROCs on those same images (each model's unmeasured images left out). Null when
 * a class has no measured image in either model; RangeError when the classes' lengths differ.
 */
export function pairedAurocDifference(
  a: PairedClasses,
  b: PairedClasses,
  rounds = AUROC_BOOTSTRAP_ROUNDS,
  seed = 1,
): PairedAurocDifference | null {
  if (a.positives.length !== b.positives.length || a.negatives.length !== b.negatives.length) {
    throw new RangeError(
      `paired AUROC: the classes hold ${a.positives.length} and ${a.negatives.length} images in one report, ${b.positives.length} and ${b.negatives.length} in the other; pairs need the same counts`,
    );
  }
  const all = (n: number) => Array.from({ length: n }, (_, index) => index);
  const whole = (side: PairedClasses) =>
    auroc(
      measured(side.positives, all(side.positives.length)),
      measured(side.negatives, all(side.negatives.length)),
    );
  const aurocA = whole(a);
  const aurocB = whole(b);
  if (aurocA === null || aurocB === null) return null;
  const rng = new Rng(seed);
  const values = new Float64Array(rounds);
  const draw = (n: number) => Uint32Array.from({ length: n }, () => rng.index(n));
  let kept = 0;
  for (let round = 0; round < rounds; round++) {
    const positives = draw(a.positives.length);
    const negatives = draw(a.negatives.length);
    const roundA = auroc(measured(a.positives, positives), measured(a.negatives, negatives));
    const roundB = auroc(measured(b.positives, positives), measured(b.negatives, negatives));
    // A round whose draw holds no measured image of a class in one model has no AUROC; it is skipped.
    if (roundA !== null && roundB !== null) values[kept++] = roundA - roundB;
  }
  return {
    aurocA,
    aurocB,
    difference: aurocA - aurocB,
    interval: percentileInterval(values.subarray(0, kept)),
  };
}

/** The settings two reports must share for their images to pair up (same starting noise and prompt). */
const PAIRED_SETTINGS = ["n", "seed", "maxBatch", "measureSize", "phrases"] as const;

/** Settings that change how image i is drawn from its noise; two reports may differ in them. */
export const SAMPLER_SETTINGS = [
  "sampler",
  "steps",
  "spacing",
  "guidance",
  "guidanceRescale",
  "negativePrompt",
  "negativeGuidance",
] as const;

/** What reports written before a setting was recorded sampled with. */
const SETTING_BEFORE_RECORDED: Partial<Record<(typeof SAMPLER_SETTINGS)[number], unknown>> = {
  spacing: "leading",
  guidanceRescale: 0,
  negativePrompt: "",
  negativeGuidance: 1,
};

/** "key left vs right" for each key whose value (as `read` gives it) differs between two reports. */
export function settingDifferences<K extends string>(
  keys: readonly K[],
  a: FidelityReport,
  b: FidelityReport,
  read: (report: FidelityReport, key: K) => unknown,
): string[] {
  return keys.flatMap((key) => {
    const [left, right] = [JSON.stringify(read(a, key)), JSON.stringify(read(b, key))];
    return left === right ? [] : [`${key} ${left ?? "unset"} vs ${right ?? "unset"}`];
  });
}

/** A sampler setting of a report, with what reports written before it was recorded used. */
export function settingOf(report: FidelityReport, key: (typeof SAMPLER_SETTINGS)[number]): unknown {
  return report.settings?.[key] ?? SETTING_BEFORE_RECORDED[key];
}

export interface FidelityReportComparison {
  a: string;
  b: string;
  /** Sampler settings in which the reports differ ("steps 10 vs 25"); empty when they share them all. */
  samplerDifferences: string[];
  /** The CTR (Cardiomegaly vs No Finding), then each measure both reports hold. */
  rows: { name: "cardiomegaly" | FidelityMeasureName; comparison: PairedAurocDifference | null }[];
}

/** The per-image values a report needs for pairing or pooling, or an error naming what is missing. */
export function byImage(values: unknown, where: string): (number | null)[] {
  if (!Array.isArray(values) || values.some((value) => value !== null && typeof value !== "number")) {
    throw new Error(
      `${where}: no per-image values (byImage); the report was written before they were recorded, measure it again`,
    );
  }
  return values as (number | null)[];
}

/**
 * Compares two fidelity reports image by image (`pairedAurocDifference` for the CTR and every measure
 * both hold). The reports must share the resolution and the settings that fix each image's starting
 * noise and prompt (`PAIRED_SETTINGS`, and for pooled reports the seeds pooled, in order); an Error
 * names each that differs. Sampler settings may differ
 * and are listed in `samplerDifferences`. `names` label the reports in messages.
 */
export function compareFidelityReports(
  a: FidelityReport,
  b: FidelityReport,
  names: [string, string] = ["a", "b"],
): FidelityReportComparison {
  const differences: string[] = [];
  if (a.resolution !== b.resolution) differences.push(`resolution ${a.resolution} vs ${b.resolution}`);
  differences.push(...settingDifferences(PAIRED_SETTINGS, a, b, (report, key) => report.settings?.[key]));
  // Pooled reports (`poolFidelityReports`) pair up image by image when they pool the same seeds in order.
  const [poolA, poolB] = [JSON.stringify(a.pooled?.seeds), JSON.stringify(b.pooled?.seeds)];
  if (poolA !== poolB) differences.push(`pooled seeds ${poolA ?? "none"} vs ${poolB ?? "none"}`);
  if (differences.length > 0) {
    throw new Error(
      `${names[0]} and ${names[1]} were not measured on paired images: ${differences.join("; ")}`,
    );
  }
  const samplerDifferences = settingDifferences(SAMPLER_SETTINGS, a, b, settingOf);
  const rows: FidelityReportComparison["rows"] = [
    {
      name: "cardiomegaly",
      comparison: pairedAurocDifference(
        {
          positives: byImage(a.generated?.cardiomegaly?.byImage, `${names[0]}: generated.cardiomegaly`),
          negatives: byImage(a.generated?.normal?.byImage, `${names[0]}: generated.normal`),
        },
        {
          positives: byImage(b.generated?.cardiomegaly?.byImage, `${names[1]}: generated.cardiomegaly`),
          negatives: byImage(b.generated?.normal?.byImage, `${names[1]}: generated.normal`),
        },
      ),
    },
  ];
  for (const measure of a.measures ?? []) {
    const other = (b.measures ?? []).find((candidate) => candidate.name === measure.name);
    if (!other) continue;
    const sides = (report: typeof measure, name: string) => {
      const orient = (values: (number | null)[]) =>
        FIDELITY_MEASURES[measure.name].higherMeansPositive
          ? values
          : values.map((value) => (value === null ? null : -value));
      return {
        positives: orient(byImage(report.generated?.positive?.byImage, `${name}: ${measure.name} positive`)),
        negatives: orient(byImage(report.generated?.negative?.byImage, `${name}: ${measure.name} negative`)),
      };
    };
    rows.push({
      name: measure.name,
      comparison: pairedAurocDifference(sides(measure, names[0]), sides(other, names[1])),
    });
  }
  return { a: names[0], b: names[1], samplerDifferences, rows };
}

export function formatFidelityComparison(comparison: FidelityReportComparison): string {
  const lines = [
    `paired comparison of generated images (same noise and prompt for image i): A = ${comparison.a}, B = ${comparison.b}`,
    comparison.samplerDifferences.length > 0
      ? `  sampled differently: ${comparison.samplerDifferences.join("; ")} (the difference measured is of model and sampling together)`
      : "  sampled alike (sampler, steps, spacing, guidance and its rescale): the difference measured is of the weights",
  ];
  for (const { name, comparison: row } of comparison.rows) {
    const label =
      name === "cardiomegaly"
        ? "CTR, Cardiomegaly vs No Finding"
        : `${name}, ${FIDELITY_MEASURES[name].positive} vs ${FIDELITY_MEASURES[name].negative}`;
    if (row === null) {
      lines.push(`  ${label}: undefined (a class has no measurable image)`);
      continue;
    }
    const verdict = intervalVerdict(row.interval, {
      below: "B separates better (decided)",
      above: "A separates better (decided)",
      neither: "no difference decided",
    });
    const [low, high] = row.interval.map(signedFixed);
    lines.push(
      `  ${label}: AUROC A ${row.aurocA.toFixed(3)}, B ${row.aurocB.toFixed(3)}, A - B ${signedFixed(row.difference)} (95% paired bootstrap interval ${low} to ${high}, ${AUROC_BOOTSTRAP_ROUNDS} rounds): ${verdict}`,
    );
  }
  return lines.join("\n");
}
