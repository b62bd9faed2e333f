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
 */

import type { Race } from "@cxr/data";
import {
  type CxrRecord,
  decodeImage,
  loadChexpert,
  measureCardiothoracicRatio,
  Rng,
  resizeBilinear,
  shuffledOrder,
  toModelInput,
} from "@cxr/data";
import type { PromptFields } from "./model/prompt.ts";
import type { Pipeline } from "./pipeline/pipeline.ts";
import type { SamplerKind } from "./schedule/samplers.ts";

export interface FidelityOptions {
  /** Images per class (generated, and real when available). */
  n: number;
  steps: number;
  sampler: SamplerKind;
  guidance: number;
  seed: number;
  /** A CheXpert-layout folder with real films (the phantom's output); its `split` films are measured. */
  realData?: string;
  split: "valid" | "test" | "train";
  maxBatch: number;
  /** Images smaller than this are upsampled (bilinear) to it before measuring. */
  measureSize: number;
  onProgress?: (message: string) => void;
}

export const FIDELITY_DEFAULTS: Omit<FidelityOptions, "realData"> = {
  n: 32,
  steps: 25,
  sampler: "ddim",
  guidance: 3,
  seed: 1,
  split: "test",
  maxBatch: 16,
  measureSize: 128,
};

export interface ClassMeasurement {
  images: number;
  /** Images where the lungs could be segmented and the ratio measured. */
  measured: number;
  meanRatio: number | null;
  ratios: number[];
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

export interface FidelityReport {
  model: string;
  resolution: number;
  settings: Omit<FidelityOptions, "onProgress">;
  generated: FidelityComparison;
  real: FidelityComparison | null;
  seconds: number;
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
  const rng = new Rng(seed);
  const values = new Float64Array(rounds);
  const draw = (from: readonly number[]) => Array.from(from, () => from[rng.index(from.length)]);
  for (let round = 0; round < rounds; round++) {
    values[round] = auroc(draw(positives), draw(negatives)) as number;
  }
  values.sort();
  const at = (q: number) => values[Math.min(rounds - 1, Math.max(0, Math.round(q * (rounds - 1))))];
  return [at(0.025), at(0.975)];
}

function measureAll(images: readonly Float32Array[], size: number, measureSize: number): ClassMeasurement {
  const ratios: number[] = [];
  for (const image of images) {
    const side = Math.max(size, measureSize);
    const pixels =
      side === size ? image : resizeBilinear({ width: size, height: size, pixels: image }, side, side).pixels;
    const measurement = measureCardiothoracicRatio(pixels, side);
    if (measurement && Number.isFinite(measurement.ratio)) ratios.push(measurement.ratio);
  }
  return {
    images: images.length,
    measured: ratios.length,
    meanRatio: ratios.length > 0 ? ratios.reduce((a, b) => a + b, 0) / ratios.length : null,
    ratios,
  };
}

function compare(cardiomegaly: ClassMeasurement, normal: ClassMeasurement): FidelityComparison {
  return {
    cardiomegaly,
    normal,
    auroc: auroc(cardiomegaly.ratios, normal.ratios),
    aurocInterval: aurocBootstrapInterval(cardiomegaly.ratios, normal.ratios),
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

export async function measureFidelity(
  pipeline: Pipeline,
  input: Partial<FidelityOptions> = {},
): Promise<FidelityReport> {
  const options: FidelityOptions = { ...FIDELITY_DEFAULTS, ...input };
  if (!Number.isSafeInteger(options.n) || options.n < 2 || options.n > 10_000) {
    throw new RangeError(`fidelity: n must be an integer in [2, 10000], got ${options.n}`);
  }
  const started = performance.now();
  const size = pipeline.model.config.resolution;
  const progress = options.onProgress ?? (() => {});
  const prompts = (findings: string[]): PromptFields[] =>
    Array.from({ length: options.n }, (_, index) => ({
      ...DEMOGRAPHICS[index % DEMOGRAPHICS.length],
      findings,
    }));
  const generate = async (findings: string[], label: string) => {
    progress(`generating ${options.n} "${label}" images (${options.sampler}, ${options.steps} steps)`);
    const result = await pipeline.generate({
      prompt: prompts(findings),
      n: 1,
      steps: options.steps,
      sampler: options.sampler,
      guidance: options.guidance,
      seed: options.seed,
      maxBatch: options.maxBatch,
    });
    return result.images.map((image) => image.pixels);
  };
  // The same seed for both classes: image i starts from the same noise, only the prompt differs.
  const generated = compare(
    measureAll(await generate(["Cardiomegaly"], "Cardiomegaly"), size, options.measureSize),
    measureAll(await generate([], "No Finding"), size, options.measureSize),
  );
  let real: FidelityComparison | null = null;
  if (options.realData) {
    progress(`measuring real films of ${options.realData} (${options.split} split)`);
    const records = loadChexpert(options.realData, { onError: "skip" }).records.filter(
      (record) => record.split === options.split && record.frontal,
    );
    const positives = records.filter((record) => record.labels.Cardiomegaly === 1);
    const negatives = records.filter((record) => record.labels["No Finding"] === 1);
    if (positives.length === 0 || negatives.length === 0) {
      throw new Error(
        `fidelity: ${options.realData} (${options.split} split) has ${positives.length} Cardiomegaly and ${negatives.length} No Finding films; need both`,
      );
    }
    real = compare(
      measureAll(await realImages(positives, size, options.n, options.seed), size, options.measureSize),
      measureAll(await realImages(negatives, size, options.n, options.seed + 1), size, options.measureSize),
    );
  }
  const { onProgress: _onProgress, ...settings } = options;
  return {
    model: pipeline.dir ?? pipeline.model.config.name,
    resolution: size,
    settings,
    generated,
    real,
    seconds: (performance.now() - started) / 1000,
  };
}

function describeClass(name: string, measurement: ClassMeasurement): string {
  const mean = measurement.meanRatio === null ? "-" : measurement.meanRatio.toFixed(3);
  return `${name.padEnd(13)} ${String(measurement.measured).padStart(4)}/${String(measurement.images).padEnd(4)} measured, mean CTR ${mean}`;
}

export function formatFidelity(report: FidelityReport): string {
  const lines = [
    `conditioning fidelity of ${report.model} (${report.resolution} px, measured at ${Math.max(report.resolution, report.settings.measureSize)} px; ${report.settings.sampler}, ${report.settings.steps} steps, guidance ${report.settings.guidance}, seed ${report.settings.seed})`,
  ];
  const block = (title: string, comparison: FidelityComparison) => {
    lines.push(`${title}:`);
    lines.push(`  ${describeClass("Cardiomegaly", comparison.cardiomegaly)}`);
    lines.push(`  ${describeClass("No Finding", comparison.normal)}`);
    lines.push(
      `  AUROC of the CTR (cardiomegaly vs normal): ${comparison.auroc === null || comparison.aurocInterval === null ? "undefined (a class has no measurable image)" : `${comparison.auroc.toFixed(3)} (95% bootstrap interval ${comparison.aurocInterval[0].toFixed(3)} to ${comparison.aurocInterval[1].toFixed(3)}, ${AUROC_BOOTSTRAP_ROUNDS} rounds)`}`,
    );
  };
  block("generated", report.generated);
  if (report.real)
    block(`real films (${report.settings.split} split, resized to ${report.resolution} px)`, report.real);
  lines.push(`${report.seconds.toFixed(1)} s`);
  return lines.join("\n");
}
