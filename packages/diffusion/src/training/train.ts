/**
 * Trains the generator (text encoder and UNet jointly) on radiographs with their prompts, the recipe of
 * RoentGen-v2's fine-tuning at phantom scale: epsilon or v prediction, optional min-SNR weighting
 * (Hang et al. 2023), AdamW, linear warm-up then cosine decay, gradient clipping, EMA weights, and
 * 10% of prompts replaced by the empty prompt so classifier-free guidance has an unconditional model.
 *
 * Determinism: the data order of epoch e is `shuffledOrder(n, seed * 1000 + e)` over the epoch's pool
 * (every record once, or with `repeatFindings` positive records several times), the timesteps and the
 * prompt dropout of step s come from Philox at a position given by s alone, and the noise from a Philox
 * generator whose offset is checkpointed; so a run resumed from a checkpoint computes the same batches,
 * noise and updates as one that never stopped (bit-identical weights on the same adapter).
 * The loss is read back every `logEvery` steps (one read for all of them), never inside a step.
 */
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import {
  batches,
  CHEXPERT_LABELS,
  type ChexpertLabel,
  type CxrRecord,
  type HostBatch,
  shuffledOrder,
} from "@cxr/data";
import {
  AdamW,
  backward,
  clipGradNorm,
  concat,
  cosineLearningRate,
  defaultGpu,
  Ema,
  Generator,
  type Gpu,
  mean,
  mseLoss,
  mul,
  noGrad,
  randomReference,
  Tensor,
} from "@cxr/kernels";
import {
  checkConfig,
  type DiffusionModelConfig,
  diffusionConfig,
  predictionProblem,
  type TrainedPrediction,
  withAttentionAt,
  withResolution,
} from "../model/config.ts";
import {
  CheckpointError,
  createDiffusionModel,
  DiffusionModel,
  MODEL_FILES,
  readModelConfig,
} from "../model/model.ts";
import { promptFromRecord } from "../model/prompt.ts";
import { WordTokenizer } from "../model/tokenizer.ts";
import { makeNoiseSchedule } from "../schedule/betas.ts";
import { addNoise, GpuNoiseSchedule, velocityTarget } from "../schedule/noising.ts";
import { betaScheduleOf } from "../schedule/of-config.ts";
import {
  CHECKPOINT_FORMAT,
  findCheckpoint,
  readOptimizerFile,
  readTrainingState,
  saveCheckpoint,
  type TrainingState,
} from "./checkpoint.ts";
import { loadTrainingData, type TrainingDataFormat } from "./data.ts";
import { TrainOptionsError } from "./errors.ts";
import { writeLossPlot } from "./plot.ts";
import { type SingleFindings, selectSingleFindings, singleFindingsProblems } from "./select.ts";

export interface TrainOptions {
  /** Training data folder (CheXpert layout or a RoentGen-style prompt folder). */
  data: string;
  format?: TrainingDataFormat;
  /**
   * A named configuration (`DIFFUSION_CONFIGS`) or a full one. With `init` it may be left out (the
   * initial model's configuration is used); when given it must equal that configuration.
   */
  config?: string | DiffusionModelConfig;
  /**
   * Start from the weights, tokenizer and configuration of this model folder (e.g. the shipped
   * models/phantom-diffusion, or a run's checkpoint/model) instead of a fresh initialisation: a new run
   * with a fresh optimizer, learning-rate schedule and EMA (started at these weights). Continuing the
   * same run where it stopped is `resume`, not this.
   */
  init?: string;
  /**
   * Grow the `init` model before training: transformer blocks (self-attention, cross-attention to the
   * text, GEGLU) added at these UNet levels (0 = full resolution), starting as the identity
   * (`DiffusionModel.grow`); every other weight is the init model's. Needs `init`, excludes `config`.
   */
  growAttention?: number[];
  /**
   * What the UNet learns to predict, replacing the configuration's (or the init model's) `prediction`:
   * with `init`, the same weights learn the other parameterisation (v = sqrt(abar) eps - sqrt(1 - abar)
   * x0 equals eps at the noisiest timesteps). Saved in the run's config.json.
   */
  prediction?: TrainedPrediction;
  /**
   * Train at this image size (pixel space) instead of the configuration's (or the init model's)
   * `resolution` (`withResolution`, renamed `name@Npx`): with `init`, the same weights learn at the
   * other size, as Stable Diffusion 2 was fine-tuned from 512 to 768 px. Images are resized to it.
   * Saved in the run's config.json.
   */
  resolution?: number;
  /** Total optimizer steps of the run (a resumed run continues up to this). */
  steps: number;
  batchSize: number;
  out: string;
  resume: boolean;
  seed: number;
  learningRate: number;
  /** Default: min(500, 10% of the steps). */
  warmupSteps?: number;
  weightDecay: number;
  maxGradNorm: number;
  emaDecay: number;
  /** Min-SNR-gamma loss weighting; null for the plain MSE. */
  minSnrGamma: number | null;
  /** Share of prompts replaced by "" (classifier-free guidance training). */
  conditioningDropout: number;
  /**
   * Oversampling of rare findings: a record positive (label 1) for a listed finding appears this many
   * times in each epoch's pool (the largest factor of its findings; integers 1-100), so the text
   * encoder and UNet see those words and their pixels more often. Unset: every record once.
   */
  repeatFindings?: Partial<Record<ChexpertLabel, number>>;
  /**
   * Train only on single-finding films (`selectSingleFindings`): the records whose one finding,
   * Support Devices aside, is a listed one ("No Finding" included), at most the given number of a
   * finding (drawn by the seed; null: all). Applied before `repeatFindings`. Unset: every record.
   */
  singleFindings?: SingleFindings;
  /**
   * Share of training prompts (in [0, 1], default 0) whose impression is written from the record's
   * labels ("Cardiomegaly and pleural effusion.", as `promptFromFields` writes prompts from a findings
   * list) instead of the record's own report impression ("Moderate cardiomegaly with small left
   * pleural effusion. ..."). Prompts built from findings lists (`cxr generate --findings`, the
   * server's `findings`, the fidelity measurement) are then worded as in training, and each finding's
   * word appears without the report's co-occurring phrases more often. Drawn per sample and step
   * from the seed, so a resumed run draws the same.
   */
  labelPrompts: number;
  /**
   * Label-worded prompts name the side the record's report gives a lateralised finding ("Left
   * pleural effusion." instead of "Pleural effusion."; `promptFromRecord`'s `sides`). Default false.
   */
  labelSides?: boolean;
  /** Write a checkpoint every this many steps (and at the end). */
  checkpointEvery: number;
  /** Read the loss back and report progress every this many steps. */
  logEvery: number;
  gpu?: Gpu;
  /** Stop after the current step (a checkpoint is written first). */
  signal?: AbortSignal;
  /**
   * Awaited before the run writes to `out` after it started (loss rows, checkpoints); when it throws,
   * the run stops with that error and writes nothing more. For services where another process may
   * have taken the run over (a queue worker that lost its lock must not write over the new owner's
   * checkpoint).
   */
  beforeWrite?: () => Promise<void>;
  onProgress?: (progress: TrainProgress) => void;
  /** Messages (data notes, checkpoints); default console.error. */
  log?: (message: string) => void;
}

export const TRAIN_DEFAULTS: Omit<TrainOptions, "data" | "config" | "out" | "init"> = {
  steps: 1000,
  batchSize: 16,
  resume: false,
  seed: 1,
  learningRate: 2e-4,
  weightDecay: 1e-2,
  maxGradNorm: 1,
  emaDecay: 0.999,
  minSnrGamma: 5,
  conditioningDropout: 0.1,
  labelPrompts: 0,
  checkpointEvery: 200,
  logEvery: 10,
};

/** Limits that catch typos (a batch of 10^6 would exhaust any adapter). */
export const TRAIN_LIMITS = { maxSteps: 10_000_000, maxBatch: 4096 } as const;

export interface TrainProgress {
  step: number;
  totalSteps: number;
  /** Mean loss over the steps since the last report. */
  loss: number;
  learningRate: number;
  stepsPerSecond: number;
  etaSeconds: number;
  imagesSeen: number;
}

export interface TrainResult {
  steps: number;
  imagesSeen: number;
  seconds: number;
  /** The EMA model directory (what `cxr generate --model` takes). */
  modelDir: string;
  checkpointDir: string;
  lossCsv: string;
  lossPng: string | null;
  stopped: boolean;
}

export { TrainOptionsError };

function checkOptions(options: TrainOptions): void {
  const problems: string[] = [];
  const integer = (value: number, name: string, min: number, max: number) => {
    if (!Number.isSafeInteger(value) || value < min || value > max) {
      problems.push(`${name} must be an integer in [${min}, ${max}], got ${value}`);
    }
  };
  integer(options.steps, "steps", 1, TRAIN_LIMITS.maxSteps);
  integer(options.batchSize, "batch size", 1, TRAIN_LIMITS.maxBatch);
  integer(options.checkpointEvery, "checkpointEvery", 1, TRAIN_LIMITS.maxSteps);
  integer(options.logEvery, "logEvery", 1, TRAIN_LIMITS.maxSteps);
  integer(options.seed, "seed", 0, 2 ** 31);
  if (!(options.learningRate > 0 && options.learningRate < 1)) {
    problems.push(`learning rate must be in (0, 1), got ${options.learningRate}`);
  }
  if (!(options.emaDecay >= 0 && options.emaDecay < 1))
    problems.push(`emaDecay must be in [0, 1), got ${options.emaDecay}`);
  if (!(options.conditioningDropout >= 0 && options.conditioningDropout <= 1)) {
    problems.push(`conditioningDropout must be in [0, 1], got ${options.conditioningDropout}`);
  }
  if (!(options.labelPrompts >= 0 && options.labelPrompts <= 1)) {
    problems.push(`labelPrompts must be in [0, 1], got ${options.labelPrompts}`);
  }
  if (options.labelSides && !(options.labelPrompts > 0)) {
    problems.push("labelSides words the label prompts, so it needs labelPrompts above 0");
  }
  const prediction = options.prediction === undefined ? null : predictionProblem(options.prediction);
  if (prediction) problems.push(prediction);
  if (options.minSnrGamma !== null && !(options.minSnrGamma > 0)) {
    problems.push(`minSnrGamma must be positive or null, got ${options.minSnrGamma}`);
  }
  if (
    options.warmupSteps !== undefined &&
    !(Number.isSafeInteger(options.warmupSteps) && options.warmupSteps >= 0)
  ) {
    problems.push(`warmupSteps must be an integer >= 0, got ${options.warmupSteps}`);
  }
  for (const [label, factor] of Object.entries(options.repeatFindings ?? {})) {
    if (!(CHEXPERT_LABELS as readonly string[]).includes(label)) {
      problems.push(`repeatFindings: unknown finding "${label}" (one of ${CHEXPERT_LABELS.join(", ")})`);
    }
    if (!Number.isSafeInteger(factor) || (factor as number) < 1 || (factor as number) > 100) {
      problems.push(`repeatFindings: the factor of ${label} must be an integer in [1, 100], got ${factor}`);
    }
  }
  if (options.singleFindings !== undefined) problems.push(...singleFindingsProblems(options.singleFindings));
  if (problems.length > 0) throw new TrainOptionsError(`trainDiffusion: ${problems.join("; ")}`);
}

/**
 * An epoch's pool of record indices: every record once, and a record positive for a finding in
 * `repeat` that finding's factor times (the largest factor when several apply), in record order.
 */
export function epochPool(
  records: readonly Pick<CxrRecord, "labels">[],
  repeat: Partial<Record<ChexpertLabel, number>> | undefined,
): number[] {
  const factors = Object.entries(repeat ?? {}) as [ChexpertLabel, number][];
  const pool: number[] = [];
  records.forEach((record, index) => {
    let times = 1;
    for (const [label, factor] of factors) if (record.labels[label] === 1) times = Math.max(times, factor);
    for (let copy = 0; copy < times; copy++) pool.push(index);
  });
  return pool;
}

/** Parses `--repeat-findings "Cardiomegaly=3,Pleural Effusion=2"`. */
export function parseRepeatFindings(text: string): Partial<Record<ChexpertLabel, number>> {
  const result: Partial<Record<ChexpertLabel, number>> = {};
  for (const part of text
    .split(",")
    .map((item) => item.trim())
    .filter((item) => item.length > 0)) {
    const match = /^(.+?)\s*=\s*(\d+)$/.exec(part);
    if (!match) throw new TrainOptionsError(`--repeat-findings: expected FINDING=N, got "${part}"`);
    const label = CHEXPERT_LABELS.find((name) => name.toLowerCase() === match[1].toLowerCase());
    if (label === undefined) {
      throw new TrainOptionsError(
        `--repeat-findings: unknown finding "${match[1]}" (one of ${CHEXPERT_LABELS.join(", ")})`,
      );
    }
    result[label] = Number(match[2]);
  }
  if (Object.keys(result).length === 0) throw new TrainOptionsError("--repeat-findings: no FINDING=N given");
  return result;
}

/**
 * The run's model configuration: the named or given one, or the `init` model's (which must agree),
 * with `prediction` and `resolution` replaced when the options give them.
 */
function runConfig(options: TrainOptions): DiffusionModelConfig {
  const base = baseRunConfig(options);
  const config = options.prediction === undefined ? base : { ...base, prediction: options.prediction };
  if (options.resolution === undefined) return config;
  try {
    return withResolution(config, options.resolution);
  } catch (error) {
    throw new TrainOptionsError(`trainDiffusion: ${(error as Error).message}`);
  }
}

function baseRunConfig(options: TrainOptions): DiffusionModelConfig {
  const given =
    options.config === undefined
      ? undefined
      : typeof options.config === "string"
        ? diffusionConfig(options.config)
        : structuredClone(options.config);
  if (options.init === undefined) {
    if (given === undefined) throw new TrainOptionsError("trainDiffusion: give a config or an init model");
    if (options.growAttention !== undefined) {
      throw new TrainOptionsError("trainDiffusion: growing attention needs an init model to grow");
    }
    checkConfig(given);
    return given;
  }
  const initial = readModelConfig(options.init);
  if (options.growAttention !== undefined) {
    if (given !== undefined) {
      throw new TrainOptionsError(
        "trainDiffusion: give either a config or attention levels to grow the init model, not both",
      );
    }
    try {
      return withAttentionAt(initial, options.growAttention);
    } catch (error) {
      throw new TrainOptionsError(`trainDiffusion: ${(error as Error).message}`);
    }
  }
  if (given !== undefined) {
    // `sampling` is how the model is sampled, not what is trained: it may differ.
    const differences = configDifferences(
      { ...initial, sampling: undefined },
      { ...given, sampling: undefined },
    );
    if (differences.length > 0) {
      throw new TrainOptionsError(
        `trainDiffusion: --config ${given.name} differs from the init model ${join(options.init, MODEL_FILES.config)} (${differences.slice(0, 6).join("; ")}${differences.length > 6 ? `; ${differences.length - 6} more` : ""}); leave --config out to train the init model's configuration`,
      );
    }
  }
  return initial;
}

/** Dotted paths where two configurations differ. */
function configDifferences(a: unknown, b: unknown, path = ""): string[] {
  if (typeof a === "object" && a !== null && typeof b === "object" && b !== null) {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    return [...keys].flatMap((key) =>
      configDifferences(
        (a as Record<string, unknown>)[key],
        (b as Record<string, unknown>)[key],
        path ? `${path}.${key}` : key,
      ),
    );
  }
  return JSON.stringify(a) === JSON.stringify(b)
    ? []
    : [`${path || "config"}: init ${JSON.stringify(a)}, given ${JSON.stringify(b)}`];
}

/**
 * The init model with what the run changes about it and its weights do not: the prediction (what the
 * UNet's output is trained to mean) and the image size (`withResolution`). Same weights, tokenizer
 * and modules.
 */
function retargeted(
  model: DiffusionModel,
  config: DiffusionModelConfig,
  log: (message: string) => void,
): DiffusionModel {
  const initial = model.config;
  if (initial.prediction === config.prediction && initial.resolution === config.resolution) return model;
  if (initial.prediction !== config.prediction) {
    log(`prediction: ${config.prediction} (the init model predicted ${initial.prediction})`);
  }
  if (initial.resolution !== config.resolution) {
    log(
      `resolution: ${config.resolution} px (the init model was trained at ${initial.resolution} px), "${config.name}"`,
    );
  }
  return new DiffusionModel(
    {
      ...initial,
      name: config.name,
      prediction: config.prediction,
      resolution: config.resolution,
      unet: { ...initial.unet, sampleSize: config.unet.sampleSize },
    },
    model.tokenizer,
    model.textEncoder,
    model.unet,
  );
}

/**
 * A per-finding option (`repeatFindings`, `singleFindings`) with its findings in CHEXPERT_LABELS
 * order: the selection and the epoch pool do not depend on the order the flag listed them in, so a
 * resume that lists the same findings in another order must compare equal. Keys that are not
 * findings (only in a hand-edited state file) keep their order after the findings.
 */
export function findingsInLabelOrder<T>(value: Readonly<Record<string, T>>): Record<string, T> {
  const known = CHEXPERT_LABELS.filter((label) => Object.hasOwn(value, label));
  const others = Object.keys(value).filter((key) => !(CHEXPERT_LABELS as readonly string[]).includes(key));
  return Object.fromEntries([...known, ...others].map((key) => [key, value[key]]));
}

/** The resume identity as stored in a checkpoint, with its per-finding options in label order. */
function canonicalIdentity(stored: Record<string, unknown>): Record<string, unknown> {
  const result = { ...stored };
  for (const key of ["repeatFindings", "singleFindings"]) {
    const value = result[key];
    if (value !== null && typeof value === "object" && !Array.isArray(value)) {
      result[key] = findingsInLabelOrder(value as Record<string, unknown>);
    }
  }
  return result;
}

/** The options that must match for a resume to continue the same run. */
function runIdentity(options: TrainOptions, config: DiffusionModelConfig, warmupSteps: number) {
  return {
    config: config.name,
    init: options.init === undefined ? null : resolve(options.init),
    steps: options.steps,
    batchSize: options.batchSize,
    seed: options.seed,
    learningRate: options.learningRate,
    warmupSteps,
    weightDecay: options.weightDecay,
    maxGradNorm: options.maxGradNorm,
    emaDecay: options.emaDecay,
    minSnrGamma: options.minSnrGamma,
    conditioningDropout: options.conditioningDropout,
    // Only present when used, so checkpoints written before the option existed still resume.
    ...(options.repeatFindings === undefined
      ? {}
      : { repeatFindings: findingsInLabelOrder(options.repeatFindings) }),
    ...(options.singleFindings === undefined
      ? {}
      : { singleFindings: findingsInLabelOrder(options.singleFindings) }),
    ...(options.labelPrompts === 0 ? {} : { labelPrompts: options.labelPrompts }),
    ...(options.labelSides ? { labelSides: true } : {}),
    ...(options.growAttention === undefined ? {} : { growAttention: options.growAttention }),
    ...(options.prediction === undefined ? {} : { prediction: options.prediction }),
    ...(options.resolution === undefined ? {} : { resolution: options.resolution }),
  };
}

const LOSS_CSV_HEADER = "step,loss,learning_rate,images_seen,seconds\n";

/** Per-sample min-SNR weights: min(SNR, gamma) / SNR (epsilon) or / (SNR + 1) (v prediction). */
export function minSnrWeights(
  alphasCumprod: Float64Array,
  timesteps: ArrayLike<number>,
  gamma: number,
  prediction: TrainedPrediction,
): Float32Array {
  return Float32Array.from(timesteps, (t) => {
    const abar = alphasCumprod[t];
    const snr = abar / (1 - abar);
    return Math.min(snr, gamma) / (prediction === "epsilon" ? snr : snr + 1);
  });
}

export interface LossInputs {
  /** x_0 [B, C, H, W] in [-1, 1] (released with the step's other inputs). */
  images: Tensor;
  /** The noise of this step, [B, C, H, W] (released too). */
  epsilon: Tensor;
  timesteps: Float32Array;
  /** One per image ("" for the unconditional input). */
  prompts: string[];
  minSnrGamma: number | null;
}

/**
 * The training loss of one batch: noise the images to their timesteps, encode the prompts (with
 * gradients: the text encoder trains jointly), predict, and take the (min-SNR weighted) MSE against
 * epsilon or v. `release()` frees the step's inputs after `backward(loss)`.
 */
export function diffusionLoss(
  model: DiffusionModel,
  table: GpuNoiseSchedule,
  alphasCumprod: Float64Array,
  inputs: LossInputs,
): { loss: Tensor; release: () => void } {
  const { images, epsilon, timesteps } = inputs;
  const gpu = images.gpu;
  const batch = images.shape[0];
  const prediction = model.config.prediction;
  const timestepTensor = Tensor.upload(gpu, timesteps, [batch]);
  const noisy = addNoise(table, images, epsilon, timestepTensor);
  const target = prediction === "epsilon" ? epsilon : velocityTarget(table, images, epsilon, timestepTensor);
  const encoded = model.encodePrompts(inputs.prompts, { warn: () => {} });
  const output = model.unet.forward(noisy, timestepTensor, encoded.hiddenStates);
  let loss: Tensor;
  let weights: Tensor | null = null;
  if (inputs.minSnrGamma !== null) {
    weights = Tensor.upload(gpu, minSnrWeights(alphasCumprod, timesteps, inputs.minSnrGamma, prediction), [
      batch,
      1,
      1,
      1,
    ]);
    loss = mean(mul(mseLoss(output, target, "none"), weights));
  } else {
    loss = mseLoss(output, target, "mean");
  }
  const release = () => {
    for (const tensor of [images, timestepTensor, epsilon, noisy, encoded.ids, weights]) tensor?.release();
    if (target !== epsilon) target.release();
  };
  return { loss, release };
}

/** Timesteps and prompt-dropout draws of step `step`: Philox uniforms at an offset fixed by the step. */
export function stepDraws(seed: number, step: number, batchSize: number, numTrainTimesteps: number) {
  const uniforms = randomReference.uniform(2 * batchSize, seed + 1, step * 2 * TRAIN_LIMITS.maxBatch);
  const timesteps = new Float32Array(batchSize);
  const dropDraws: number[] = [];
  for (let index = 0; index < batchSize; index++) {
    timesteps[index] = Math.min(numTrainTimesteps - 1, Math.floor(uniforms[index] * numTrainTimesteps));
    dropDraws.push(uniforms[batchSize + index]);
  }
  return { timesteps, dropDraws };
}

/**
 * The per-sample draws of `labelPrompts` at a step: their own stream (seed + 3), so runs without the
 * option keep exactly the draws they had before it existed.
 */
export function labelPromptDraws(seed: number, step: number, batchSize: number): Float64Array {
  return randomReference.uniform(batchSize, seed + 3, step * TRAIN_LIMITS.maxBatch);
}

/** The prompt a sample trains on: "" when dropped for guidance, else the label-style or report prompt. */
export function trainingPrompt(
  prompts: { report: string; labels: string },
  draws: { drop: number; label: number | null },
  options: Pick<TrainOptions, "conditioningDropout" | "labelPrompts">,
): string {
  if (draws.drop < options.conditioningDropout) return "";
  return draws.label !== null && draws.label < options.labelPrompts ? prompts.labels : prompts.report;
}

export async function trainDiffusion(
  input: Partial<TrainOptions> & Pick<TrainOptions, "data" | "out">,
): Promise<TrainResult> {
  const options: TrainOptions = { ...TRAIN_DEFAULTS, ...input };
  checkOptions(options);
  const log = options.log ?? ((message: string) => console.error(message));
  const config = runConfig(options);
  const warmupSteps = options.warmupSteps ?? Math.min(500, Math.floor(options.steps / 10));
  const identity = runIdentity(options, config, warmupSteps);

  const checkpointDir = options.resume ? findCheckpoint(options.out) : null;
  if (options.resume && !checkpointDir) {
    throw new CheckpointError(`--resume: no checkpoint in ${options.out} (looked for checkpoint/state.json)`);
  }
  if (!options.resume && findCheckpoint(options.out)) {
    throw new CheckpointError(
      `${options.out} already holds a checkpoint; pass --resume to continue it or choose another --out`,
    );
  }
  let resumed: TrainingState | null = null;
  if (checkpointDir) {
    resumed = readTrainingState(checkpointDir);
    // Checkpoints written before 2026-12-05 kept the findings in flag order; compare in label order.
    const stored = canonicalIdentity(resumed.options as Record<string, unknown>);
    const now = identity as Record<string, unknown>;
    const differences = [...new Set([...Object.keys(now), ...Object.keys(stored)])]
      .filter((key) => JSON.stringify(stored[key]) !== JSON.stringify(now[key]))
      .map((key) => `${key}: checkpoint ${JSON.stringify(stored[key])}, now ${JSON.stringify(now[key])}`);
    if (differences.length > 0) {
      throw new CheckpointError(
        `cannot resume ${checkpointDir} with different settings: ${differences.join("; ")}`,
      );
    }
  }

  const data = loadTrainingData(options.data, options.format);
  for (const note of data.notes) log(`data: ${note}`);
  let { records, prompts } = data;
  if (options.singleFindings !== undefined) {
    const selection = selectSingleFindings(records, options.singleFindings, options.seed);
    log(
      `single findings: ${selection.kept.length} of ${records.length} records kept (${selection.counts
        .map((count) => `${count.label} ${count.kept} of ${count.qualified}`)
        .join(", ")})`,
    );
    records = selection.kept.map((index) => data.records[index]);
    prompts = selection.kept.map((index) => data.prompts[index]);
  }
  if (records.length < options.batchSize) {
    throw new TrainOptionsError(
      `trainDiffusion: ${records.length} training images in ${options.data} are fewer than one batch of ${options.batchSize}`,
    );
  }
  const promptOf = new Map(
    records.map((record, index) => [
      record,
      {
        report: prompts[index],
        labels: promptFromRecord(record, { impression: "labels", sides: options.labelSides === true }),
      },
    ]),
  );
  if (options.labelPrompts > 0) {
    const differ = records.filter((record) => {
      const both = promptOf.get(record)!;
      return both.report !== both.labels;
    }).length;
    log(
      `label prompts: ${(100 * options.labelPrompts).toFixed(0)}% of prompts written from the labels (${differ} of ${records.length} records have a report impression that differs)`,
    );
    if (options.labelSides) {
      const sided = records.filter(
        (record) => promptOf.get(record)!.labels !== promptFromRecord(record, { impression: "labels" }),
      ).length;
      log(`label sides: ${sided} of ${records.length} label prompts name the side their report gives`);
    }
  }
  const pool = epochPool(records, options.repeatFindings);
  if (options.repeatFindings !== undefined) {
    const share = (label: ChexpertLabel, indices: readonly number[]) =>
      `${((100 * indices.filter((index) => records[index].labels[label] === 1).length) / indices.length).toFixed(1)}%`;
    const all = records.map((_, index) => index);
    log(
      `repeat findings: ${pool.length} images per epoch (${records.length} records); ${Object.keys(
        options.repeatFindings,
      )
        .map(
          (label) =>
            `${label} ${share(label as ChexpertLabel, all)} -> ${share(label as ChexpertLabel, pool)}`,
        )
        .join(", ")}`,
    );
  }

  const gpu = options.gpu ?? (await defaultGpu());
  mkdirSync(options.out, { recursive: true });
  let model: DiffusionModel;
  if (checkpointDir) {
    model = await loadModelDir(gpu, join(checkpointDir, "model"));
  } else if (options.init !== undefined && options.growAttention !== undefined) {
    const grown = await growModelDir(gpu, options.init, options.growAttention, options.seed);
    model = grown.model;
    const added = grown.added.reduce(
      (sum, name) => sum + (model.unet.stateTensors().get(name)?.size ?? 0),
      0,
    );
    log(
      `initialised from ${options.init}, grown to "${config.name}": ${grown.added.length} new tensors (${added} parameters) in the transformer blocks at level ${options.growAttention.join(", ")}, starting as the identity (proj_out zero); fresh optimizer, schedule and EMA`,
    );
  } else if (options.init !== undefined) {
    model = await loadModelDir(gpu, options.init);
    log(`initialised from ${options.init} (fresh optimizer, schedule and EMA)`);
  } else {
    const vocabularyPrompts =
      options.labelPrompts > 0 ? [...prompts, ...[...promptOf.values()].map((both) => both.labels)] : prompts;
    const tokenizer = WordTokenizer.fromPrompts(vocabularyPrompts, {
      maxLength: config.textEncoder.maxPositions,
      maxVocabulary: config.textEncoder.vocabSize,
    });
    model = createDiffusionModel(gpu, config, tokenizer, options.seed);
  }
  if (options.init !== undefined && !checkpointDir) model = retargeted(model, config, log);
  const named = model.namedParameters();
  const names = [...named.keys()];
  const params = [...named.values()];
  const optimizer = new AdamW(params, {
    learningRate: options.learningRate,
    weightDecay: options.weightDecay,
    parameterNames: names,
  });
  const ema = new Ema(params, { decay: options.emaDecay, parameterNames: names });
  const beta = betaScheduleOf(config);
  const schedule = makeNoiseSchedule(beta);
  const table = GpuNoiseSchedule.upload(gpu, schedule);
  const noise = new Generator(gpu, options.seed + 2);

  let step = 0;
  let epoch = 0;
  let position = 0;
  let imagesSeen = 0;
  let secondsBefore = 0;
  if (checkpointDir && resumed) {
    const stored = readOptimizerFile(checkpointDir);
    const uploaded: Record<string, Tensor> = {};
    for (const [name, entry] of stored) uploaded[name] = Tensor.upload(gpu, entry.data, entry.shape);
    await optimizer.loadState(uploaded);
    for (const tensor of Object.values(uploaded)) tensor.release();
    await loadEma(gpu, ema, join(checkpointDir, "ema"), resumed.emaUpdates);
    step = resumed.step;
    epoch = resumed.epoch;
    position = resumed.position;
    noise.offset = resumed.noiseOffset;
    imagesSeen = resumed.imagesSeen;
    secondsBefore = resumed.seconds;
    log(`resumed ${checkpointDir} at step ${step} (epoch ${epoch}, ${imagesSeen} images seen)`);
  }

  const lossCsv = join(options.out, "loss.csv");
  if (!checkpointDir || !existsSync(lossCsv)) writeFileSync(lossCsv, LOSS_CSV_HEADER);
  else truncateLossCsv(lossCsv, step);

  const state = (): TrainingState => ({
    format: CHECKPOINT_FORMAT,
    step,
    epoch,
    position,
    noiseOffset: noise.offset,
    emaUpdates: ema.updates,
    imagesSeen,
    seconds: secondsBefore + (performance.now() - started) / 1000,
    options: identity,
  });
  const checkpoint = async () => {
    await options.beforeWrite?.();
    const dir = await saveCheckpoint(options.out, {
      model,
      swapEma: () => ema.swap(),
      optimizerState: optimizer.state(),
      state: state(),
    });
    log(`checkpoint: step ${step} -> ${dir}`);
    return dir;
  };

  const { resolution, channels } = config;
  const started = performance.now();
  let reportStarted = performance.now();
  let reportStep = step;
  let pending: { step: number; loss: Tensor; learningRate: number }[] = [];
  const flushLosses = async () => {
    if (pending.length === 0) return;
    const stacked = noGrad(() =>
      concat(
        pending.map((entry) => entry.loss),
        0,
      ),
    );
    const values = await stacked.download();
    stacked.release();
    await options.beforeWrite?.();
    const seconds = secondsBefore + (performance.now() - started) / 1000;
    const lines = pending.map(
      (entry, index) =>
        `${entry.step},${values[index]},${entry.learningRate},${entry.step * options.batchSize},${seconds.toFixed(3)}`,
    );
    appendFileSync(lossCsv, `${lines.join("\n")}\n`);
    const now = performance.now();
    const rate = (step - reportStep) / Math.max(1e-9, (now - reportStarted) / 1000);
    options.onProgress?.({
      step,
      totalSteps: options.steps,
      loss: values.reduce((a, b) => a + b, 0) / values.length,
      learningRate: pending.at(-1)!.learningRate,
      stepsPerSecond: rate,
      etaSeconds: rate > 0 ? (options.steps - step) / rate : Number.POSITIVE_INFINITY,
      imagesSeen,
    });
    reportStarted = now;
    reportStep = step;
    for (const entry of pending) entry.loss.release();
    pending = [];
  };

  let stopped = false;
  model.train();
  training: while (step < options.steps) {
    const order = shuffledOrder(pool.length, options.seed * 1000 + epoch)
      .slice(position)
      .map((slot) => pool[slot]);
    const stream = batches(records, {
      batchSize: options.batchSize,
      imageSize: resolution,
      order,
      dropLast: true,
      prefetch: 2,
      upload: async (batch: HostBatch) =>
        Tensor.upload(gpu, batch.images, [batch.size, channels, resolution, resolution]),
    });
    for await (const batch of stream) {
      if (batch.size !== options.batchSize) {
        // An unreadable image was skipped: the step would differ from a resumed run; refuse.
        throw new Error(
          `trainDiffusion: batch ${batch.index} lost images (${batch.issues.map((issue) => issue.message).join("; ")})`,
        );
      }
      const images = batch.device;
      const { timesteps, dropDraws } = stepDraws(
        options.seed,
        step,
        options.batchSize,
        beta.numTrainTimesteps,
      );
      const labelDraws =
        options.labelPrompts > 0 ? labelPromptDraws(options.seed, step, options.batchSize) : null;
      const stepPrompts = batch.records.map((record, index) => {
        const both = promptOf.get(record);
        if (both === undefined)
          throw new Error(`trainDiffusion: batch ${batch.index} holds an unknown record`);
        return trainingPrompt(
          both,
          { drop: dropDraws[index], label: labelDraws === null ? null : labelDraws[index] },
          options,
        );
      });
      const { loss, release } = diffusionLoss(model, table, schedule.alphasCumprod, {
        images,
        epsilon: noise.normal(images.shape),
        timesteps,
        prompts: stepPrompts,
        minSnrGamma: options.minSnrGamma,
      });
      backward(loss);
      clipGradNorm(params, options.maxGradNorm).release();
      const learningRate = cosineLearningRate(step, {
        baseLearningRate: options.learningRate,
        warmupSteps,
        totalSteps: options.steps,
      });
      optimizer.step(learningRate);
      optimizer.zeroGrad();
      ema.update();
      release();
      step++;
      position += options.batchSize;
      imagesSeen += options.batchSize;
      pending.push({ step, loss: loss.reshapeInto([1]), learningRate });
      if (step % options.logEvery === 0 || step === options.steps) await flushLosses();
      const stopNow = options.signal?.aborted === true;
      if (step % options.checkpointEvery === 0 || step === options.steps || stopNow) {
        await flushLosses();
        await checkpoint();
      }
      if (stopNow) {
        stopped = true;
        break training;
      }
      if (step >= options.steps) break training;
    }
    epoch++;
    position = 0;
  }
  await flushLosses();
  const final = join(options.out, "checkpoint", "ema");
  let lossPng: string | null = null;
  try {
    lossPng = await writeLossPlot(lossCsv, join(options.out, "loss.png"), config.name);
  } catch (error) {
    log(`loss plot not written: ${(error as Error).message}`);
  }
  const seconds = secondsBefore + (performance.now() - started) / 1000;
  optimizer.release();
  ema.release();
  table.release();
  model.dispose();
  return {
    steps: step,
    imagesSeen,
    seconds,
    modelDir: final,
    checkpointDir: join(options.out, "checkpoint"),
    lossCsv,
    lossPng,
    stopped,
  };
}

/** Keeps the header and the rows up to `step` (rows written after the checkpoint are redone). */
function truncateLossCsv(path: string, step: number): void {
  const lines = readFileSync(path, "utf8")
    .split("\n")
    .filter((line) => line.length > 0);
  const kept = lines.slice(1).filter((line) => Number(line.split(",")[0]) <= step);
  writeFileSync(path, `${LOSS_CSV_HEADER}${kept.map((line) => `${line}\n`).join("")}`);
}

async function loadModelDir(gpu: Gpu, dir: string): Promise<DiffusionModel> {
  const { DiffusionModel } = await import("../model/model.ts");
  return DiffusionModel.load(gpu, dir);
}

async function growModelDir(gpu: Gpu, dir: string, levels: readonly number[], seed: number) {
  const { DiffusionModel } = await import("../model/model.ts");
  return DiffusionModel.grow(gpu, dir, levels, seed);
}

/** Loads the EMA averages from an EMA model directory (names prefixed as namedParameters). */
async function loadEma(gpu: Gpu, ema: Ema, dir: string, updates: number): Promise<void> {
  const model = await loadModelDir(gpu, dir);
  try {
    const state: Record<string, Tensor> = Object.fromEntries(model.namedParameters());
    ema.loadState(state, updates);
    await gpu.sync();
  } finally {
    // Ema.loadState copies on the GPU; the copies are recorded before the release.
    model.dispose();
  }
}
