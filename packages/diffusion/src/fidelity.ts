/**
 * Conditioning fidelity measured from pixels alone: does a "Cardiomegaly" prompt give a larger heart
 * than a "No Finding" prompt? The phantom's own cardiothoracic-ratio measurement
 * (`measureCardiothoracicRatio`, @cxr/data) is applied to generated images of both prompts and to real
 * phantom films of both labels (held-out split, resized to the model's resolution the same way the
 * training images were), and the CTR's AUROC for telling the two apart is reported for each.
 * AUROC 0.5 is chance; the real films' AUROC is the ceiling this measurement allows at this resolution.
 *
 * The measurement needs some pixels: on real phantom films (test split, 35 vs 40 films) its AUROC is
 * 0.87 at 64 px, 0.44 at 32 px measured directly, 0.77 when the 32 px image is upsampled (bilinear) to
 * 64 px and 0.81 to 128 px; at 16 px it is at chance. So both real and generated images are upsampled
 * to `measureSize` (128) before measuring.
 *
 * Two more measures ride on the same lung segmentation (`measureLungZones`, @cxr/data), each with its
 * own AUROC beside the real films' (see FIDELITY_MEASURES): pleural effusion by the shallower lung's
 * lateral depth ("Pleural Effusion" vs "No Finding" prompts), and sex by the lower-zone ratio (the
 * "No Finding" images generated again with the other sex from the same noise, female vs male).
 */

import type { Race } from "@cxr/data";
import {
  type CxrRecord,
  decodeImage,
  loadChexpert,
  measureCardiothoracicRatio,
  measureLungZones,
  Rng,
  resizeBilinear,
  shuffledOrder,
  toModelInput,
} from "@cxr/data";
import { negativePromptFor, type PromptFields } from "./model/prompt.ts";
import type { Pipeline } from "./pipeline/pipeline.ts";
import type { SamplerKind, TimestepSpacing } from "./schedule/samplers.ts";

/** The measures beside the CTR; each costs `n` more generated images. */
export const FIDELITY_MEASURE_NAMES = ["pleural-effusion", "sex"] as const;
export type FidelityMeasureName = (typeof FIDELITY_MEASURE_NAMES)[number];

/** How each extra measure is taken and which classes it tells apart. */
export const FIDELITY_MEASURES: Readonly<
  Record<
    FidelityMeasureName,
    { measurement: string; positive: string; negative: string; higherMeansPositive: boolean }
  >
> = {
  "pleural-effusion": {
    measurement:
      "lateral lung depth (apex to the lowest row where half the lateral fifth is lung, in thorax widths; the shallower lung)",
    positive: "Pleural Effusion",
    negative: "No Finding",
    higherMeansPositive: false,
  },
  sex: {
    measurement: "lower-zone ratio (lateral lower over upper lung brightness, both lungs)",
    positive: "female",
    negative: "male",
    higherMeansPositive: true,
  },
};

/** The findings whose prompt wording `FidelityOptions.phrases` may set. */
export const FIDELITY_FINDINGS = ["Cardiomegaly", "Pleural Effusion"] as const;
export type FidelityFinding = (typeof FIDELITY_FINDINGS)[number];

/**
 * Parses `--phrase` values ("Pleural Effusion=large left pleural effusion", finding names
 * case-insensitive) into `FidelityOptions.phrases`; "|" separates alternatives that the generated
 * images take in turn ("Pleural Effusion=right pleural effusion|left pleural effusion"). Throws
 * naming the bad value.
 */
export function parseFidelityPhrases(values: readonly string[]): FidelityPhrases {
  const phrases: FidelityPhrases = {};
  for (const value of values) {
    const at = value.indexOf("=");
    const name = at < 0 ? "" : value.slice(0, at).trim();
    const words =
      at < 0
        ? []
        : value
            .slice(at + 1)
            .split("|")
            .map((part) => part.trim());
    if (at < 0 || words.some((part) => part === "")) {
      throw new RangeError(`--phrase: expected FINDING=WORDS or FINDING=WORDS|WORDS..., got "${value}"`);
    }
    const finding = FIDELITY_FINDINGS.find((known) => known.toLowerCase() === name.toLowerCase());
    if (finding === undefined) {
      throw new RangeError(`--phrase: unknown finding "${name}" (one of ${FIDELITY_FINDINGS.join(", ")})`);
    }
    if (phrases[finding] !== undefined) throw new RangeError(`--phrase: ${finding} is worded twice`);
    phrases[finding] = words.length === 1 ? words[0] : words;
  }
  return phrases;
}

/** How generated prompts word a finding: one phrase, or alternatives taken in turn. */
export type FidelityPhrases = Partial<Record<FidelityFinding, string | readonly string[]>>;

/**
 * The wording of `finding` in generated image `index`'s prompt. Alternatives change every
 * `DEMOGRAPHICS.length` images, so that each alternative meets every demographic group.
 */
export function fidelityPhraseAt(
  phrases: FidelityPhrases | undefined,
  finding: FidelityFinding,
  index: number,
): string {
  const wording = phrases?.[finding];
  if (wording === undefined) return finding;
  if (typeof wording === "string") return wording;
  return wording[Math.floor(index / DEMOGRAPHICS.length) % wording.length];
}

/** Real films for the sex measure: "No Finding" films of adults (the generated prompts are 55-75 years). */
export const SEX_MEASURE_MIN_AGE = 18;

export interface FidelityOptions {
  /** Images per class (generated, and real when available). */
  n: number;
  steps: number;
  sampler: SamplerKind;
  /** Timestep spacing of the sampler (GenerateOptions' `spacing`; reports written before it: "leading"). */
  spacing: TimestepSpacing;
  guidance: number;
  /** Guidance rescale phi (GenerateOptions' `guidanceRescale`; reports written before it: 0). */
  guidanceRescale: number;
  /**
   * The negative prompt of every generated image (GenerateOptions' `negativePrompt`; reports written
   * before it: ""), with `{patient}` standing for the image's own demographic sentence ("70 year old
   * WHITE female."; `negativePromptFor`). "": the empty prompt.
   */
  negativePrompt: string;
  /** The negative prompt's own guidance scale (GenerateOptions' `negativeGuidance`; reports written before it: 1). */
  negativeGuidance: number;
  seed: number;
  /** A CheXpert-layout folder with real films (the phantom's output); its `split` films are measured. */
  realData?: string;
  split: "valid" | "test" | "train";
  maxBatch: number;
  /** Images smaller than this are upsampled (bilinear) to it before measuring. */
  measureSize: number;
  /** Measures beside the CTR (each adds n generated images). */
  measures: readonly FidelityMeasureName[];
  /**
   * How the generated prompts word each finding; unset: the label's phrase ("Cardiomegaly.",
   * "Pleural effusion.", as `promptFromFields` writes findings). E.g. `{ "Pleural Effusion": "large
   * left pleural effusion" }` asks in the wording of a report; a list of phrases is taken in turn
   * (`fidelityPhraseAt`), e.g. the sides a report names. The real films are the same either way.
   */
  phrases?: FidelityPhrases;
  onProgress?: (message: string) => void;
}

export const FIDELITY_DEFAULTS: Omit<FidelityOptions, "realData"> = {
  n: 32,
  steps: 25,
  sampler: "ddim",
  spacing: "leading",
  guidance: 3,
  guidanceRescale: 0,
  negativePrompt: "",
  negativeGuidance: 1,
  seed: 1,
  split: "test",
  maxBatch: 16,
  measureSize: 128,
  measures: FIDELITY_MEASURE_NAMES,
};

export interface ClassMeasurement {
  images: number;
  /** Images where the lungs could be segmented and the ratio measured. */
  measured: number;
  meanRatio: number | null;
  ratios: number[];
  /**
   * The ratio of image i in generation (or film) order, null where it could not be measured: image i
   * of two reports with the same settings came from the same noise and prompt, so two models can be
   * compared pair by pair (`compareFidelityReports`).
   */
  byImage: (number | null)[];
}

export interface FidelityComparison {
  cardiomegaly: ClassMeasurement;
  normal: ClassMeasurement;
  /** AUROC of the CTR for cardiomegaly vs normal over measured images; null when a class has none. */
  auroc: number | null;
  /**
   * 95% percentile bootstrap interval of that AUROC (each class resampled on its own,
   * `AUROC_BOOTSTRAP_ROUNDS` rounds, seeded); null with the AUROC.
   */
  aurocInterval: [number, number] | null;
}

export const AUROC_BOOTSTRAP_ROUNDS = 2000;

export interface MeasureClass {
  label: string;
  images: number;
  /** Images where the lungs could be segmented and the measure taken. */
  measured: number;
  mean: number | null;
  values: number[];
  /** The value of image i in generation order, null where not measured (as `ClassMeasurement.byImage`). */
  byImage: (number | null)[];
  /**
   * pleural-effusion only: each lung's own lateral depth, image by image (the measure itself is the
   * shallower of the two). Reports written before it lack it.
   */
  lungs?: LungDepths;
}

/** Each lung's lateral depth of a class's images, in image order (null: lungs not segmented). */
export interface LungDepths {
  right: (number | null)[];
  left: (number | null)[];
}

/**
 * One lung's mean lateral depth with the finding and without, the difference (positive minus negative)
 * and its 95% percentile bootstrap interval (each class resampled on its own, `AUROC_BOOTSTRAP_ROUNDS`
 * rounds, seeded); null where a class has no measured image.
 */
export interface LungShift {
  positive: number | null;
  negative: number | null;
  difference: number | null;
  interval: [number, number] | null;
}

/** Where a finding moves the lateral depth: each lung on its own. */
export interface LungsComparison {
  right: LungShift;
  left: LungShift;
}

export interface MeasureComparison {
  positive: MeasureClass;
  negative: MeasureClass;
  /**
   * AUROC for telling the positive class from the negative one, oriented by the measure (for a measure
   * that is lower with the finding, the probability that a positive image measures lower); null when
   * a class has no measured image.
   */
  auroc: number | null;
  /** 95% bootstrap interval as for the CTR (`AUROC_BOOTSTRAP_ROUNDS` rounds, classes resampled apart). */
  aurocInterval: [number, number] | null;
  /** pleural-effusion only: the shift of each lung's depth (the classes' `lungs`). */
  lungs?: LungsComparison;
  /**
   * pleural-effusion with wordings taken in turn (`FidelityOptions.phrases`), generated images only:
   * each wording's images against every negative image, lung by lung.
   */
  byWording?: WordingLungs[];
}

/** The images of one wording of the finding and their per-lung shift against the negative class. */
export interface WordingLungs {
  wording: string;
  images: number;
  lungs: LungsComparison;
}

export interface FidelityMeasure {
  name: FidelityMeasureName;
  measurement: string;
  higherMeansPositive: boolean;
  generated: MeasureComparison;
  real: MeasureComparison | null;
  /** Generated AUROC minus the real films' AUROC, with its interval; null without real films. */
  versusReal: AurocDifference | null;
}

export interface FidelityReport {
  model: string;
  resolution: number;
  settings: Omit<FidelityOptions, "onProgress">;
  /** The CTR, cardiomegaly vs normal. */
  generated: FidelityComparison;
  real: FidelityComparison | null;
  /** The CTR's generated AUROC minus the real films' AUROC, with its interval; null without real films. */
  versusReal: AurocDifference | null;
  /** The other measures, in `settings.measures` order. */
  measures: FidelityMeasure[];
  seconds: number;
  /**
   * Set on a report that pools the images of reports differing only in seed (`poolFidelityReports`):
   * the reports and their seeds. Its real films are then every film of the split (up to 10,000 a class).
   */
  pooled?: { reports: string[]; seeds: number[] };
}

/** Mann-Whitney AUROC: P(score of a positive > score of a negative), ties counted half. */
export function auroc(positives: readonly number[], negatives: readonly number[]): number | null {
  if (positives.length === 0 || negatives.length === 0) return null;
  let wins = 0;
  for (const p of positives) for (const q of negatives) wins += p > q ? 1 : p === q ? 0.5 : 0;
  return wins / (positives.length * negatives.length);
}

/**
 * 95% percentile bootstrap interval of the Mann-Whitney AUROC, resampling positives and negatives
 * separately (the two classes are independent samples of images). Seeded, so a report reproduces.
 */
export function aurocBootstrapInterval(
  positives: readonly number[],
  negatives: readonly number[],
  rounds = AUROC_BOOTSTRAP_ROUNDS,
  seed = 1,
): [number, number] | null {
  if (positives.length === 0 || negatives.length === 0) return null;
  return bootstrapInterval(rounds, seed, (draw) => auroc(draw(positives), draw(negatives)) as number);
}

/**
 * The 95% percentile interval of `statistic` over `rounds` bootstrap rounds. Each round calls it with
 * `draw`, which resamples a list with replacement; one seeded stream serves every draw in call order.
 */
function bootstrapInterval(
  rounds: number,
  seed: number,
  statistic: (draw: (from: readonly number[]) => number[]) => number,
): [number, number] {
  const rng = new Rng(seed);
  const values = new Float64Array(rounds);
  const draw = (from: readonly number[]) => Array.from(from, () => from[rng.index(from.length)]);
  for (let round = 0; round < rounds; round++) values[round] = statistic(draw);
  return percentileInterval(values);
}

/** Generated-minus-real AUROC of one measure, and the 95% bootstrap interval of that difference. */
export interface AurocDifference {
  difference: number;
  interval: [number, number];
}

/**
 * AUROC(a) - AUROC(b) for two independent comparisons (generated and real films), with the 95%
 * percentile bootstrap interval of the difference: every round resamples all four classes on their
 * own and takes the difference of the two AUROCs. An interval that excludes 0 decides that the two
 * separate differently; one that includes it does not. Null when a class is empty.
 */
export function aurocDifference(
  a: { positives: readonly number[]; negatives: readonly number[] },
  b: { positives: readonly number[]; negatives: readonly number[] },
  rounds = AUROC_BOOTSTRAP_ROUNDS,
  seed = 1,
): AurocDifference | null {
  const aurocA = auroc(a.positives, a.negatives);
  const aurocB = auroc(b.positives, b.negatives);
  if (aurocA === null || aurocB === null) return null;
  const interval = bootstrapInterval(
    rounds,
    seed,
    (draw) =>
      (auroc(draw(a.positives), draw(a.negatives)) as number) -
      (auroc(draw(b.positives), draw(b.negatives)) as number),
  );
  return { difference: aurocA - aurocB, interval };
}

/** The 2.5th and 97.5th percentiles of bootstrap values (sorted in place). */
export function percentileInterval(values: Float64Array): [number, number] {
  values.sort();
  const last = values.length - 1;
  const at = (q: number) => values[Math.min(last, Math.max(0, Math.round(q * last)))];
  return [at(0.025), at(0.975)];
}

/**
 * Mean of `positives` minus mean of `negatives` (nulls skipped), with the 95% percentile bootstrap
 * interval of that difference (each class resampled on its own); null parts when a class is empty.
 */
export function meanShift(
  positives: readonly (number | null)[],
  negatives: readonly (number | null)[],
  rounds = AUROC_BOOTSTRAP_ROUNDS,
  seed = 1,
): LungShift {
  const a = positives.filter((value): value is number => value !== null);
  const b = negatives.filter((value): value is number => value !== null);
  const meanA = mean(a);
  const meanB = mean(b);
  if (meanA === null || meanB === null) {
    return { positive: meanA, negative: meanB, difference: null, interval: null };
  }
  const interval = bootstrapInterval(
    rounds,
    seed,
    (draw) => (mean(draw(a)) as number) - (mean(draw(b)) as number),
  );
  return { positive: meanA, negative: meanB, difference: meanA - meanB, interval };
}

/** Each lung's shift of depth between two classes (`meanShift`, lung by lung). */
export function compareLungs(positive: LungDepths, negative: LungDepths): LungsComparison {
  return {
    right: meanShift(positive.right, negative.right),
    left: meanShift(positive.left, negative.left),
  };
}

/**
 * The positive images grouped by the wording of their prompt (`wordingOf(i)` for image i; groups in
 * `wordings` order), each group's per-lung shift against every negative image.
 */
export function lungsByWording(
  positive: LungDepths,
  negative: LungDepths,
  wordings: readonly string[],
  wordingOf: (index: number) => string,
): WordingLungs[] {
  return wordings.map((wording) => {
    const picked = positive.right.map((_, index) => index).filter((index) => wordingOf(index) === wording);
    const pick = (values: readonly (number | null)[]) => picked.map((index) => values[index]);
    return {
      wording,
      images: picked.length,
      lungs: compareLungs({ right: pick(positive.right), left: pick(positive.left) }, negative),
    };
  });
}

/** Every measure of one image; null where the lungs could not be segmented. */
interface ImageMeasures {
  ratio: number | null;
  lateralDepth: number | null;
  lowerZoneRatio: number | null;
  rightDepth: number | null;
  leftDepth: number | null;
}

function measureImages(images: readonly Float32Array[], size: number, measureSize: number): ImageMeasures[] {
  return images.map((image) => {
    const side = Math.max(size, measureSize);
    const pixels =
      side === size ? image : resizeBilinear({ width: size, height: size, pixels: image }, side, side).pixels;
    const ctr = measureCardiothoracicRatio(pixels, side);
    const zones = ctr ? measureLungZones(pixels, side, ctr) : null;
    const finite = (value: number | null | undefined) =>
      value !== null && value !== undefined && Number.isFinite(value) ? value : null;
    return {
      ratio: finite(ctr?.ratio),
      lateralDepth: finite(zones?.lateralDepth),
      lowerZoneRatio: finite(zones?.lowerZoneRatio),
      rightDepth: finite(zones?.right.lateralDepth),
      leftDepth: finite(zones?.left.lateralDepth),
    };
  });
}

const mean = (values: readonly number[]) =>
  values.length > 0 ? values.reduce((a, b) => a + b, 0) / values.length : null;

/** A class's CTRs from the ratio of each image in order (null: not measured). */
function ctrClass(byImage: readonly (number | null)[]): ClassMeasurement {
  const ratios = byImage.filter((ratio): ratio is number => ratio !== null);
  return {
    images: byImage.length,
    measured: ratios.length,
    meanRatio: mean(ratios),
    ratios,
    byImage: [...byImage],
  };
}

const ratiosOf = (measures: readonly ImageMeasures[]) => measures.map((measure) => measure.ratio);

const MEASURE_FIELD: Readonly<Record<FidelityMeasureName, "lateralDepth" | "lowerZoneRatio">> = {
  "pleural-effusion": "lateralDepth",
  sex: "lowerZoneRatio",
};

/** A class's values of a measure from the value of each image in order (null: not measured). */
function measureClass(label: string, byImage: readonly (number | null)[], lungs?: LungDepths): MeasureClass {
  const values = byImage.filter((value): value is number => value !== null);
  if (lungs && (lungs.right.length !== byImage.length || lungs.left.length !== byImage.length)) {
    throw new RangeError(
      `fidelity: ${label} has ${byImage.length} images but ${lungs.right.length} right and ${lungs.left.length} left lung depths`,
    );
  }
  return {
    label,
    images: byImage.length,
    measured: values.length,
    mean: mean(values),
    values,
    byImage: [...byImage],
    ...(lungs ? { lungs: { right: [...lungs.right], left: [...lungs.left] } } : {}),
  };
}

const lungsOf = (measures: readonly ImageMeasures[]): LungDepths => ({
  right: measures.map((measure) => measure.rightDepth),
  left: measures.map((measure) => measure.leftDepth),
});

const valuesOf = (name: FidelityMeasureName, measures: readonly ImageMeasures[]) =>
  measures.map((measure) => measure[MEASURE_FIELD[name]]);

/** A measure's two classes as AUROC inputs, oriented so that higher means the positive class. */
function measureSides(
  name: FidelityMeasureName,
  comparison: { positive: MeasureClass; negative: MeasureClass },
) {
  const orient = (values: readonly number[]) =>
    FIDELITY_MEASURES[name].higherMeansPositive ? values : values.map((v) => -v);
  return { positives: orient(comparison.positive.values), negatives: orient(comparison.negative.values) };
}

const ctrSides = (comparison: { cardiomegaly: ClassMeasurement; normal: ClassMeasurement }) => ({
  positives: comparison.cardiomegaly.ratios,
  negatives: comparison.normal.ratios,
});

/**
 * One measure's comparison of two classes from each image's value in order (null: not measured): the
 * classes, the AUROC oriented by the measure and its bootstrap interval, as `measureFidelity` reports.
 */
export function measureComparison(
  name: FidelityMeasureName,
  positives: readonly (number | null)[],
  negatives: readonly (number | null)[],
  lungs?: { positive: LungDepths; negative: LungDepths },
): MeasureComparison {
  const spec = FIDELITY_MEASURES[name];
  const classes = {
    positive: measureClass(spec.positive, positives, lungs?.positive),
    negative: measureClass(spec.negative, negatives, lungs?.negative),
  };
  const { positives: oriented, negatives: against } = measureSides(name, classes);
  return {
    ...classes,
    auroc: auroc(oriented, against),
    aurocInterval: aurocBootstrapInterval(oriented, against),
    ...(lungs ? { lungs: compareLungs(lungs.positive, lungs.negative) } : {}),
  };
}

function compareMeasure(
  name: FidelityMeasureName,
  positives: readonly ImageMeasures[],
  negatives: readonly ImageMeasures[],
): MeasureComparison {
  const lungs =
    name === "pleural-effusion" ? { positive: lungsOf(positives), negative: lungsOf(negatives) } : undefined;
  return measureComparison(name, valuesOf(name, positives), valuesOf(name, negatives), lungs);
}

/**
 * The CTR comparison from each image's ratio in order (null: not measured): both classes, the AUROC
 * of cardiomegaly against normal and its bootstrap interval, as `measureFidelity` reports.
 */
export function ctrComparison(
  cardiomegalyRatios: readonly (number | null)[],
  normalRatios: readonly (number | null)[],
): FidelityComparison {
  const cardiomegaly = ctrClass(cardiomegalyRatios);
  const normal = ctrClass(normalRatios);
  const { positives, negatives } = ctrSides({ cardiomegaly, normal });
  return {
    cardiomegaly,
    normal,
    auroc: auroc(positives, negatives),
    aurocInterval: aurocBootstrapInterval(positives, negatives),
  };
}

/** Demographics cycled over the generated images, the same for both prompts (only findings differ). */
const DEMOGRAPHICS: readonly { sex: "female" | "male"; age: number; race: Race }[] = [
  { sex: "female", age: 70, race: "WHITE" },
  { sex: "male", age: 65, race: "BLACK" },
  { sex: "female", age: 55, race: "ASIAN" },
  { sex: "male", age: 75, race: "HISPANIC" },
];

async function realImages(
  records: readonly CxrRecord[],
  size: number,
  n: number,
  seed: number,
): Promise<Float32Array[]> {
  const order = shuffledOrder(records.length, seed).slice(0, n);
  return Promise.all(
    order.map(async (index) => {
      const input = toModelInput(await decodeImage(records[index].imagePath), size);
      return input.map((value) => (value + 1) / 2);
    }),
  );
}

/** What `measureRealFilms` measured: the CTR comparison and the other measures' comparisons. */
export interface RealFilmsFidelity {
  cardiomegaly: FidelityComparison;
  measures: Partial<Record<FidelityMeasureName, MeasureComparison>>;
}

export interface RealFilmsOptions {
  realData: string;
  split: "valid" | "test" | "train";
  /** Films per class (the first n of a seeded shuffle). */
  n: number;
  seed: number;
  /** The resolution the films are resized to (the model's), before upsampling to measureSize. */
  size: number;
  measureSize: number;
  measures: readonly FidelityMeasureName[];
}

function checkMeasures(measures: readonly unknown[]): void {
  const seen = new Set<unknown>();
  for (const name of measures) {
    if (!(FIDELITY_MEASURE_NAMES as readonly unknown[]).includes(name)) {
      throw new RangeError(
        `fidelity: unknown measure ${JSON.stringify(name)} (known: ${FIDELITY_MEASURE_NAMES.join(", ")})`,
      );
    }
    if (seen.has(name)) throw new RangeError(`fidelity: measure ${JSON.stringify(name)} is listed twice`);
    seen.add(name);
  }
}

function checkCount(name: string, value: number, minimum: number, maximum: number): void {
  if (!Number.isSafeInteger(value) || value < minimum || value > maximum) {
    throw new RangeError(`fidelity: ${name} must be an integer in [${minimum}, ${maximum}], got ${value}`);
  }
}

/**
 * The real films' side of the comparison: n films of each class from `split` of a CheXpert-layout
 * folder, resized to `size` as the training images were, each measured once for every measure.
 * Cardiomegaly and Pleural Effusion films are compared with the same No Finding films; sex compares
 * adult No Finding films (age >= SEX_MEASURE_MIN_AGE) of each sex.
 */
export async function measureRealFilms(input: RealFilmsOptions): Promise<RealFilmsFidelity> {
  const { realData, split, n, seed, size, measureSize, measures } = input;
  checkCount("n", n, 2, 10_000);
  checkCount("size", size, 8, 4096);
  checkCount("measure size", measureSize, 8, 4096);
  checkMeasures(measures);
  const records = loadChexpert(realData, { onError: "skip" }).records.filter(
    (record) => record.split === split && record.frontal,
  );
  const need = (label: string, positives: number, other: string, negatives: number) => {
    if (positives === 0 || negatives === 0) {
      throw new Error(
        `fidelity: ${realData} (${split} split) has ${positives} ${label} and ${negatives} ${other} films; need both`,
      );
    }
  };
  const measureFilms = async (films: readonly CxrRecord[], offset: number) =>
    measureImages(await realImages(films, size, n, seed + offset), size, measureSize);
  const cardiomegaly = records.filter((record) => record.labels.Cardiomegaly === 1);
  const normal = records.filter((record) => record.labels["No Finding"] === 1);
  need("Cardiomegaly", cardiomegaly.length, "No Finding", normal.length);
  const normalMeasures = await measureFilms(normal, 1);
  const result: RealFilmsFidelity = {
    cardiomegaly: ctrComparison(ratiosOf(await measureFilms(cardiomegaly, 0)), ratiosOf(normalMeasures)),
    measures: {},
  };
  for (const name of measures) {
    if (name === "pleural-effusion") {
      const effusion = records.filter((record) => record.labels["Pleural Effusion"] === 1);
      need("Pleural Effusion", effusion.length, "No Finding", normal.length);
      result.measures[name] = compareMeasure(name, await measureFilms(effusion, 2), normalMeasures);
    } else {
      const adults = normal.filter((record) => record.age !== null && record.age >= SEX_MEASURE_MIN_AGE);
      const female = adults.filter((record) => record.sex === "female");
      const male = adults.filter((record) => record.sex === "male");
      need(`adult female No Finding`, female.length, "adult male No Finding", male.length);
      result.measures[name] = compareMeasure(
        name,
        await measureFilms(female, 3),
        await measureFilms(male, 4),
      );
    }
  }
  return result;
}

export async function measureFidelity(
  pipeline: Pipeline,
  input: Partial<FidelityOptions> = {},
): Promise<FidelityReport> {
  const options: FidelityOptions = { ...FIDELITY_DEFAULTS, ...input };
  if (!Number.isSafeInteger(options.n) || options.n < 2 || options.n > 10_000) {
    throw new RangeError(`fidelity: n must be an integer in [2, 10000], got ${options.n}`);
  }
  checkMeasures(options.measures);
  const started = performance.now();
  const size = pipeline.model.config.resolution;
  const progress = options.onProgress ?? (() => {});
  const generate = async (finding: FidelityFinding | null, label: string, flipSex = false) => {
    progress(`generating ${options.n} "${label}" images (${options.sampler}, ${options.steps} steps)`);
    const prompts: PromptFields[] = Array.from({ length: options.n }, (_, index) => {
      const demographics = DEMOGRAPHICS[index % DEMOGRAPHICS.length];
      const sex = flipSex ? (demographics.sex === "female" ? "male" : "female") : demographics.sex;
      const findings = finding === null ? [] : [fidelityPhraseAt(options.phrases, finding, index)];
      return { ...demographics, sex, findings };
    });
    const result = await pipeline.generate({
      prompt: prompts,
      n: 1,
      steps: options.steps,
      sampler: options.sampler,
      spacing: options.spacing,
      guidance: options.guidance,
      negativePrompt: prompts.map((fields) => negativePromptFor(options.negativePrompt, fields)),
      negativeGuidance: options.negativeGuidance,
      guidanceRescale: options.guidanceRescale,
      seed: options.seed,
      maxBatch: options.maxBatch,
    });
    return {
      prompts,
      measures: measureImages(
        result.images.map((image) => image.pixels),
        size,
        options.measureSize,
      ),
    };
  };
  // The same seed for every prompt set: image i starts from the same noise, only the prompt differs.
  const wording = (finding: FidelityFinding) => {
    const phrase = options.phrases?.[finding] ?? finding;
    return typeof phrase === "string" ? phrase : phrase.join(" | ");
  };
  const cardiomegaly = await generate("Cardiomegaly", wording("Cardiomegaly"));
  const normal = await generate(null, "No Finding");
  const generated = ctrComparison(ratiosOf(cardiomegaly.measures), ratiosOf(normal.measures));
  const generatedMeasures = new Map<FidelityMeasureName, MeasureComparison>();
  for (const name of options.measures) {
    if (name === "pleural-effusion") {
      const effusion = await generate("Pleural Effusion", wording("Pleural Effusion"));
      const comparison = compareMeasure(name, effusion.measures, normal.measures);
      generatedMeasures.set(name, withWordings(comparison, options.phrases, options.n));
    } else {
      // Each No Finding image again with the other sex: every noise and age appears once as each sex.
      const flipped = await generate(null, "No Finding, the other sex", true);
      const bySex = (sex: "female" | "male") =>
        [normal, flipped].flatMap((set) => set.measures.filter((_, index) => set.prompts[index].sex === sex));
      generatedMeasures.set(name, compareMeasure(name, bySex("female"), bySex("male")));
    }
  }
  let real: RealFilmsFidelity | null = null;
  if (options.realData) {
    progress(`measuring real films of ${options.realData} (${options.split} split)`);
    real = await measureRealFilms({
      realData: options.realData,
      split: options.split,
      n: options.n,
      seed: options.seed,
      size,
      measureSize: options.measureSize,
      measures: options.measures,
    });
  }
  const { onProgress: _onProgress, ...settings } = options;
  return {
    model: pipeline.dir ?? pipeline.model.config.name,
    resolution: size,
    settings,
    ...againstRealFilms(generated, generatedMeasures, options.measures, real),
    seconds: (performance.now() - started) / 1000,
  };
}

/**
 * An effusion comparison of generated images with `byWording` added when the prompts took several
 * wordings in turn (`fidelityPhraseAt` of image `index % n`: pooled reports repeat the order per seed).
 */
export function withWordings(
  comparison: MeasureComparison,
  phrases: FidelityPhrases | undefined,
  n: number,
): MeasureComparison {
  const wordings = phrases?.["Pleural Effusion"];
  if (typeof wordings === "string" || wordings === undefined) return comparison;
  const { positive, negative } = comparison;
  if (!positive.lungs || !negative.lungs) return comparison;
  const wordingOf = (index: number) => fidelityPhraseAt(phrases, "Pleural Effusion", index % n);
  return { ...comparison, byWording: lungsByWording(positive.lungs, negative.lungs, wordings, wordingOf) };
}

/**
 * The generated images' comparisons beside the real films' (when measured) and the gap of each,
 * generated minus real (`aurocDifference`): the part of a report that `measureFidelity` and
 * `poolFidelityReports` both build. `measures` orders the other measures; each needs its comparison.
 */
export function againstRealFilms(
  generated: FidelityComparison,
  generatedMeasures: ReadonlyMap<FidelityMeasureName, MeasureComparison>,
  measures: readonly FidelityMeasureName[],
  real: RealFilmsFidelity | null,
): Pick<FidelityReport, "generated" | "real" | "versusReal" | "measures"> {
  return {
    generated,
    real: real?.cardiomegaly ?? null,
    versusReal: real ? aurocDifference(ctrSides(generated), ctrSides(real.cardiomegaly)) : null,
    measures: measures.map((name) => {
      const generatedMeasure = generatedMeasures.get(name);
      if (!generatedMeasure) throw new Error(`fidelity: no generated images measured for ${name}`);
      const realMeasure = real?.measures[name] ?? null;
      const sides = (comparison: MeasureComparison) => measureSides(name, comparison);
      return {
        name,
        measurement: FIDELITY_MEASURES[name].measurement,
        higherMeansPositive: FIDELITY_MEASURES[name].higherMeansPositive,
        generated: generatedMeasure,
        real: realMeasure,
        versusReal: realMeasure ? aurocDifference(sides(generatedMeasure), sides(realMeasure)) : null,
      };
    }),
  };
}

function describeClass(name: string, measurement: ClassMeasurement): string {
  const mean = measurement.meanRatio === null ? "-" : measurement.meanRatio.toFixed(3);
  return `${name.padEnd(13)} ${String(measurement.measured).padStart(4)}/${String(measurement.images).padEnd(4)} measured, mean CTR ${mean}`;
}

function describeMeasureClass(measurement: MeasureClass): string {
  const fixed = (value: number | null) => (value === null ? "-" : value.toFixed(3));
  const lungs = measurement.lungs
    ? ` (right lung ${fixed(mean(measurement.lungs.right.filter((v) => v !== null)))}, left lung ${fixed(mean(measurement.lungs.left.filter((v) => v !== null)))})`
    : "";
  return `${measurement.label.padEnd(16)} ${String(measurement.measured).padStart(4)}/${String(measurement.images).padEnd(4)} measured, mean ${fixed(measurement.mean)}${lungs}`;
}

/** "right -0.026 (95% bootstrap interval -0.041 to -0.012), left ..." */
function describeLungs(lungs: LungsComparison): string {
  const one = (name: string, shift: LungShift) =>
    shift.difference === null || shift.interval === null
      ? `${name} undefined (a class has no measurable image)`
      : `${name} ${signedFixed(shift.difference)} (95% bootstrap interval ${signedFixed(shift.interval[0])} to ${signedFixed(shift.interval[1])})`;
  return `${one("right", lungs.right)}, ${one("left", lungs.left)}`;
}

function describeAuroc(auroc: number | null, interval: [number, number] | null): string {
  return auroc === null || interval === null
    ? "undefined (a class has no measurable image)"
    : `${auroc.toFixed(3)} (95% bootstrap interval ${interval[0].toFixed(3)} to ${interval[1].toFixed(3)}, ${AUROC_BOOTSTRAP_ROUNDS} rounds)`;
}

/** A difference with its sign: "+0.012", "-0.151". */
export const signedFixed = (value: number) => `${value >= 0 ? "+" : ""}${value.toFixed(3)}`;

/** What a difference's 95% interval decides: `below` when it lies under 0, `above` over 0, else `neither`. */
export function intervalVerdict(
  interval: readonly [number, number],
  words: { below: string; above: string; neither: string },
): string {
  return interval[1] < 0 ? words.below : interval[0] > 0 ? words.above : words.neither;
}

/** ", trailing spacing" for a non-default spacing (reports written before it had "leading"). */
function spacingNote(spacing: TimestepSpacing | undefined): string {
  return spacing && spacing !== "leading" ? `, ${spacing} spacing` : "";
}

/** "AUROC generated minus real films: -0.151 (95% bootstrap interval ...): ... (decided)" */
function describeVersusReal(versus: AurocDifference | null, indent: string): string[] {
  if (versus === null) return [];
  const verdict = intervalVerdict(versus.interval, {
    below: "the generated images separate less than the real films (decided)",
    above: "the generated images separate more than the real films (decided)",
    neither: "no difference from the real films decided",
  });
  const [low, high] = versus.interval.map(signedFixed);
  return [
    `${indent}AUROC generated minus real films: ${signedFixed(versus.difference)} (95% bootstrap interval ${low} to ${high}, ${AUROC_BOOTSTRAP_ROUNDS} rounds): ${verdict}`,
  ];
}

function ctrBlock(lines: string[], title: string, comparison: FidelityComparison): void {
  lines.push(`${title}:`);
  lines.push(`  ${describeClass("Cardiomegaly", comparison.cardiomegaly)}`);
  lines.push(`  ${describeClass("No Finding", comparison.normal)}`);
  lines.push(
    `  AUROC of the CTR (cardiomegaly vs normal): ${describeAuroc(comparison.auroc, comparison.aurocInterval)}`,
  );
}

function measureBlock(
  lines: string[],
  title: string,
  name: FidelityMeasureName,
  comparison: MeasureComparison,
) {
  const spec = FIDELITY_MEASURES[name];
  lines.push(`  ${title}:`);
  lines.push(`    ${describeMeasureClass(comparison.positive)}`);
  lines.push(`    ${describeMeasureClass(comparison.negative)}`);
  lines.push(
    `    AUROC (${spec.positive} ${spec.higherMeansPositive ? "higher" : "lower"}): ${describeAuroc(comparison.auroc, comparison.aurocInterval)}`,
  );
  if (comparison.lungs) {
    lines.push(
      `    each lung's mean depth, ${spec.positive} minus ${spec.negative}: ${describeLungs(comparison.lungs)}`,
    );
  }
  for (const group of comparison.byWording ?? []) {
    lines.push(`      "${group.wording}" (${group.images} images): ${describeLungs(group.lungs)}`);
  }
}

export function formatFidelity(report: FidelityReport): string {
  const seeds = report.pooled
    ? `seeds ${report.pooled.seeds.join(", ")} pooled, ${report.settings.n} images a prompt each`
    : `seed ${report.settings.seed}`;
  const lines = [
    `conditioning fidelity of ${report.model} (${report.resolution} px, measured at ${Math.max(report.resolution, report.settings.measureSize)} px; ${report.settings.sampler}, ${report.settings.steps} steps${spacingNote(report.settings.spacing)}, guidance ${report.settings.guidance}${report.settings.guidanceRescale ? ` rescaled by ${report.settings.guidanceRescale}` : ""}${report.settings.negativePrompt ? ` away from "${report.settings.negativePrompt}"${(report.settings.negativeGuidance ?? 1) !== 1 ? ` guided ${report.settings.negativeGuidance} over the empty prompt` : ""}` : ""}, ${seeds})`,
  ];
  for (const finding of FIDELITY_FINDINGS) {
    const phrase = report.settings.phrases?.[finding];
    if (phrase === undefined) continue;
    const words = typeof phrase === "string" ? [phrase] : phrase;
    lines.push(
      `${finding} prompts worded ${words.map((word) => `"${word}"`).join(words.length > 1 ? ", in turn, " : "")}`,
    );
  }
  const realTitle = `real films (${report.pooled ? "every film of the " : ""}${report.settings.split} split, resized to ${report.resolution} px)`;
  ctrBlock(lines, "generated", report.generated);
  if (report.real) ctrBlock(lines, realTitle, report.real);
  lines.push(...describeVersusReal(report.versusReal, ""));
  for (const measure of report.measures) {
    const spec = FIDELITY_MEASURES[measure.name];
    lines.push(`${measure.name}: ${spec.measurement}, ${spec.positive} vs ${spec.negative}`);
    measureBlock(lines, "generated", measure.name, measure.generated);
    if (measure.real) measureBlock(lines, realTitle, measure.name, measure.real);
    lines.push(...describeVersusReal(measure.versusReal, "  "));
  }
  lines.push(`${report.seconds.toFixed(1)} s${report.pooled ? " (the pooled reports' times added up)" : ""}`);
  return lines.join("\n");
}

/** The real films alone, e.g. to check how well each measure can separate at a resolution. */
export function formatRealFilms(real: RealFilmsFidelity, options: RealFilmsOptions): string {
  const lines = [
    `pixel measures on real films of ${options.realData} (${options.split} split, up to ${options.n} per class, resized to ${options.size} px, measured at ${Math.max(options.size, options.measureSize)} px)`,
  ];
  ctrBlock(lines, "cardiomegaly", real.cardiomegaly);
  for (const name of options.measures) {
    const comparison = real.measures[name];
    if (!comparison) continue;
    const spec = FIDELITY_MEASURES[name];
    lines.push(`${name}: ${spec.measurement}, ${spec.positive} vs ${spec.negative}`);
    measureBlock(lines, "real", name, comparison);
  }
  return lines.join("\n");
}
