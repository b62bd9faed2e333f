/**
 * A classifier training run as the study needs it (`cxr train classifier`): the three strategies of
 * the paper (real only; a naive mix of real and synthetic images in a stated ratio per batch;
 * supervised pretraining on synthetic, then fine-tuning on real), masked BCE over the findings plus
 * optional attribute heads, AdamW with warm-up and cosine decay per phase, light anatomy-respecting
 * augmentation, early stopping and checkpoint selection on validation macro AUROC, an atomic
 * checkpoint after every epoch and exact `--resume` from it, a metrics CSV and a learning-curve PNG;
 * then predictions on the validation and test splits in the evaluation toolkit's CSV format and
 * `evaluatePredictions` on them (and on the other institutions' test images when training on one).
 *
 * Everything that can be checked is checked before the output folder is touched: the datasets, their
 * splits and label columns, a sample of images (bit depth, size), and on resume the run's settings.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import {
  batches,
  CHEXPERT_LABELS,
  type CxrRecord,
  type DatasetFormat,
  frontalOnly,
  type HostBatch,
  loadDataset,
  shuffledOrder,
  type UncertaintyPolicy,
} from "@cxr/data";
import {
  AdamW,
  backward,
  clipGradNorm,
  cosineLearningRate,
  type Gpu,
  noGrad,
  readSafetensors,
  sigmoidOp,
  softmax,
  Tensor,
  type TensorToWrite,
  tidy,
  writeSafetensors,
} from "@cxr/kernels";
import sharp from "sharp";
import { auroc } from "../evaluation/auroc.ts";
import { evaluatePredictions } from "../evaluation/evaluate.ts";
import { writeEvaluationOutputs } from "../evaluation/outputs.ts";
import { renderPng } from "../evaluation/plots.ts";
import { formatPredictionsCsv, type PredictionTable } from "../evaluation/predictions.ts";
import { renderSummary } from "../evaluation/report.ts";
import { type AugmentConfig, augmentImages, DEFAULT_AUGMENT, NO_AUGMENT } from "./augment.ts";
import {
  AGE_SCALE,
  type AttributeHeads,
  DenseNet,
  minimumImageSize,
  NO_ATTRIBUTE_HEADS,
  RACE_CLASSES,
} from "./densenet.ts";
import { attributeTargets, type LossWeights, trainingLoss } from "./losses.ts";
import { createModel, type ImageClassifier, type ModelSpec, modelSpec } from "./models.ts";
import { predictionTableFromRecords } from "./predictions.ts";
import { type DeviceBatch, epochMean, predictProbabilities, releaseBatch, uploader } from "./train.ts";

export const STRATEGIES = ["real", "mix", "pretrain-finetune"] as const;
export type Strategy = (typeof STRATEGIES)[number];

export interface TrainRunOptions {
  /** Real dataset folder; its train/valid/test splits are used. */
  train: string;
  format: DatasetFormat;
  /** Synthetic dataset folder (its train split, or every record when it has no splits). */
  synthetic: string | null;
  syntheticFormat: DatasetFormat;
  strategy: Strategy;
  /** Share of each `mix` batch drawn from the synthetic set. */
  mixRatio: number;
  /** A DenseNet config name or "small-cnn". */
  config: string;
  out: string;
  resume: boolean;
  /** Train, select and test on this institution only; the others' test images are out of distribution. */
  institution: string | null;
  imageSize: number | null;
  batchSize: number;
  /** Epochs and peak learning rate of the real / mix / fine-tuning phase. */
  epochs: number;
  learningRate: number;
  /** Epochs and peak learning rate of the synthetic pretraining phase (pretrain-finetune only). */
  pretrainEpochs: number;
  pretrainLearningRate: number;
  weightDecay: number;
  warmupSteps: number;
  maxGradNorm: number;
  /** Epochs without a better validation macro AUROC before a phase stops. */
  patience: number;
  policy: UncertaintyPolicy;
  /**
   * Memory-efficient dense blocks (DenseNet configs): recompute each dense layer's concatenation,
   * norm1, relu1 and conv1 in backward instead of keeping them. Same training, less memory.
   */
  memoryEfficient: boolean;
  /** Which outputs are trained: findings and/or attribute heads (sex, age, race). */
  heads: { findings: boolean } & AttributeHeads;
  lossWeights: LossWeights;
  augment: boolean;
  seed: number;
  bootstrapRounds: number;
  /** Progress bar on stderr (only drawn when stderr is a terminal). */
  progress: boolean;
  /**
   * Stop (checkpointed) after this many epochs in this session; `--resume` continues. For time-boxed
   * sessions on shared machines; null runs to the end.
   */
  stopAfterEpochs: number | null;
  /**
   * Stops the run after the current optimizer step when aborted: a checkpoint with the position in
   * the epoch is written and the result says `stopped`; `resume` continues exactly (same batches,
   * augmentation and updates). For services that share the GPU (the server pauses a training for a
   * generation, a cancel, or a shutdown). Not part of the run's settings.
   */
  signal?: AbortSignal | null;
  /**
   * Awaited before each write to `out` once training started (checkpoints, best weights, metrics,
   * the final model and predictions); when it throws, the run stops with that error and writes
   * nothing more. For services where another process may have taken the run over (a queue worker
   * that lost its lock). Not part of the run's settings.
   */
  beforeWrite?: (() => Promise<void>) | null;
  /** Called after every optimizer step (not part of the run's settings). */
  onStep?: ((progress: ClassifierStepProgress) => void) | null;
  /** Where progress lines go (default stderr; not part of the run's settings). */
  log?: ((line: string) => void) | null;
}

/** Where a run stands after an optimizer step. */
export interface ClassifierStepProgress {
  phase: string;
  /** 1-based epoch of the phase, and the phase's planned epochs. */
  epoch: number;
  epochs: number;
  /** Batches done in this epoch, of `batchesPerEpoch`. */
  batch: number;
  batchesPerEpoch: number;
  /** Optimizer steps done over the whole run, of `totalSteps` planned (early stopping can end sooner). */
  step: number;
  totalSteps: number;
}

export const DEFAULT_TRAIN_RUN: Omit<TrainRunOptions, "train" | "out"> = {
  format: "chexpert",
  synthetic: null,
  syntheticFormat: "chexpert",
  strategy: "real",
  mixRatio: 0.5,
  config: "densenet-bc-phantom",
  resume: false,
  institution: null,
  imageSize: null,
  batchSize: 32,
  epochs: 8,
  learningRate: 1e-3,
  pretrainEpochs: 4,
  pretrainLearningRate: 1e-3,
  weightDecay: 1e-4,
  warmupSteps: 20,
  maxGradNorm: 1,
  patience: 3,
  policy: "ignore",
  memoryEfficient: false,
  heads: { findings: true, ...NO_ATTRIBUTE_HEADS },
  lossWeights: { findings: 1, sex: 1, age: 1, race: 1 },
  augment: true,
  seed: 1,
  bootstrapRounds: 200,
  progress: true,
  stopAfterEpochs: null,
};

/** One row of the metrics CSV. */
export interface EpochMetrics {
  phase: string;
  epoch: number;
  steps: number;
  learningRate: number;
  trainLoss: number;
  validationMacroAuroc: number;
  imagesPerSecond: number;
  seconds: number;
  /** Peak GPU memory held by the buffer pool during the epoch (bytes). */
  peakMemoryBytes: number;
}

interface Phase {
  name: "real" | "mix" | "pretrain" | "finetune";
  epochs: number;
  learningRate: number;
}

/** What the checkpoint's metadata holds besides the tensors: enough to continue exactly. */
interface TrainerState {
  phaseIndex: number;
  /** Epochs completed in the current phase. */
  epochsDone: number;
  /** Optimizer steps taken in the current phase (the schedule's position). */
  step: number;
  bestAuroc: number;
  bestEpoch: number;
  staleEpochs: number;
  history: EpochMetrics[];
  finished: boolean;
  /** Batches of the current epoch done before a mid-epoch stop (absent: none). */
  batchesDone?: number;
  /** The losses, images and seconds of those batches, so the epoch's metrics come out whole. */
  partialLosses?: number[];
  partialImages?: number;
  partialSeconds?: number;
}

export interface TrainRunResult {
  out: string;
  /** True when the session stopped at `stopAfterEpochs` before the run finished. */
  stopped: boolean;
  history: EpochMetrics[];
  /** Macro AUROC of the selected model on the validation split. */
  validationMacroAuroc: number;
  evaluations: { name: string; folder: string; macroAuroc: number | null }[];
}

const stderrLog = (message: string) => console.error(message);

// ---------------------------------------------------------------------------------------------
// Inputs: datasets, splits, label columns, images

/** CSV columns that describe an image rather than label it. */
const METADATA_COLUMNS = new Set(
  [
    "path",
    "sex",
    "age",
    "frontal/lateral",
    "ap/pa",
    "race",
    "institution",
    "prompt",
    "subject_id",
    "study_id",
    "dicom_id",
    "split",
    "patient",
    "patient_id",
    "image_id",
    "view",
    "viewposition",
  ].map((name) => name.toLowerCase()),
);

/** The label columns of a dataset's CSV files (CheXpert labels and any other non-metadata column). */
export function datasetLabelColumns(files: readonly string[]): string[] {
  const labels = new Set<string>();
  for (const file of files) {
    if (!file.toLowerCase().endsWith(".csv")) continue;
    const header = readFileSync(file, "utf8").split(/\r?\n/, 1)[0] ?? "";
    const columns = header.split(",").map((column) => column.trim().replace(/^"|"$/g, ""));
    if (!columns.some((column) => (CHEXPERT_LABELS as readonly string[]).includes(column))) continue;
    for (const column of columns) if (!METADATA_COLUMNS.has(column.toLowerCase())) labels.add(column);
  }
  return [...labels].sort();
}

interface LoadedSet {
  records: CxrRecord[];
  labelColumns: string[];
}

function loadSet(format: DatasetFormat, path: string, what: string): LoadedSet {
  if (!existsSync(path)) throw new Error(`${what} dataset ${path} does not exist`);
  const loaded = loadDataset(format, path, { onError: "fail" });
  const records = frontalOnly(loaded.records);
  if (records.length === 0) throw new Error(`${what} dataset ${path} has no frontal images`);
  const labelColumns = datasetLabelColumns(loaded.files);
  return { records, labelColumns: labelColumns.length > 0 ? labelColumns : [...CHEXPERT_LABELS].sort() };
}

function split(records: readonly CxrRecord[], name: "train" | "valid" | "test", source: string): CxrRecord[] {
  const chosen = records.filter((record) => record.split === name);
  if (chosen.length === 0) {
    throw new Error(`${source}: the ${name} split is empty (training needs train, valid and test images)`);
  }
  return chosen;
}

/**
 * Checks bit depth and size on a seeded sample of images (every image is decoded during training
 * anyway; this catches a wrong dataset before anything is written).
 */
async function checkImageSample(
  records: readonly CxrRecord[],
  imageSize: number,
  source: string,
): Promise<void> {
  const sample = shuffledOrder(records.length, 17)
    .slice(0, 12)
    .map((index) => records[index]);
  for (const record of sample) {
    let metadata: Awaited<ReturnType<ReturnType<typeof sharp>["metadata"]>>;
    try {
      metadata = await sharp(record.imagePath).metadata();
    } catch (error) {
      throw new Error(
        `${source}: ${record.imagePath}: cannot read image (${error instanceof Error ? error.message : error})`,
      );
    }
    if (metadata.depth !== "uchar" && metadata.depth !== "ushort") {
      throw new Error(
        `${source}: ${record.imagePath}: ${metadata.depth ?? "unknown"} samples; radiographs must be 8- or 16-bit`,
      );
    }
    const smaller = Math.min(metadata.width ?? 0, metadata.height ?? 0);
    if (smaller * 2 < imageSize) {
      throw new Error(
        `${source}: ${record.imagePath} is ${metadata.width}x${metadata.height}, too small for ${imageSize} px training (more than 2x upsampling); use --image-size ${Math.max(8, smaller)} or larger images`,
      );
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Checkpoints

const CHECKPOINT = "checkpoint.safetensors";
const MODEL = "model.safetensors";
const SPEC = "model.json";
const RUN = "run.json";

function writeAtomic(path: string, data: string | Uint8Array): void {
  const temporary = `${path}.tmp-${process.pid}`;
  writeFileSync(temporary, data);
  renameSync(temporary, path);
}

async function saveCheckpoint(
  path: string,
  model: ImageClassifier,
  optimizer: AdamW,
  state: TrainerState,
): Promise<void> {
  const tensors = new Map<string, TensorToWrite>();
  for (const [name, entry] of await model.state()) tensors.set(`model.${name}`, entry);
  const optimizerState = Object.entries(optimizer.state());
  const values = await Promise.all(optimizerState.map(([, tensor]) => tensor.download()));
  optimizerState.forEach(([name, tensor], index) => {
    tensors.set(`optimizer.${name}`, { shape: tensor.shape, data: values[index] });
  });
  writeSafetensors(path, tensors, { format: "cxr-classifier-checkpoint", trainer: JSON.stringify(state) });
}

async function loadCheckpoint(path: string, model: ImageClassifier, optimizer: AdamW): Promise<TrainerState> {
  const file = readSafetensors(path);
  const modelState = new Map<string, { shape: readonly number[]; data: Float32Array }>();
  const optimizerState: Record<string, Tensor> = {};
  for (const [name, tensor] of file.tensors) {
    if (name.startsWith("model.")) modelState.set(name.slice("model.".length), tensor);
    else if (name.startsWith("optimizer."))
      optimizerState[name.slice("optimizer.".length)] = Tensor.upload(model.gpu, tensor.data, tensor.shape);
  }
  model.loadState(modelState, true, path);
  await optimizer.loadState(optimizerState);
  for (const tensor of Object.values(optimizerState)) tensor.release();
  if (!file.metadata.trainer) throw new Error(`${path}: not a training checkpoint (no trainer state)`);
  return JSON.parse(file.metadata.trainer) as TrainerState;
}

// ---------------------------------------------------------------------------------------------
// Validation

/** Mean AUROC over labels with both classes among definite (0/1) validation labels. */
export function macroAurocOf(records: readonly CxrRecord[], probabilities: Float32Array): number {
  const values: number[] = [];
  CHEXPERT_LABELS.forEach((label, labelIndex) => {
    const truth: number[] = [];
    const scores: number[] = [];
    records.forEach((record, row) => {
      const value = record.labels[label];
      if (value === 1 || value === 0) {
        truth.push(value);
        scores.push(probabilities[row * CHEXPERT_LABELS.length + labelIndex]);
      }
    });
    const area = auroc(truth, scores);
    if (Number.isFinite(area)) values.push(area);
  });
  return values.length === 0 ? Number.NaN : values.reduce((sum, value) => sum + value, 0) / values.length;
}

// ---------------------------------------------------------------------------------------------
// Outputs: metrics CSV, learning curve

function metricsCsv(history: readonly EpochMetrics[]): string {
  const header =
    "phase,epoch,steps,learning_rate,train_loss,validation_macro_auroc,images_per_second,seconds,peak_memory_mib";
  const rows = history.map((row) =>
    [
      row.phase,
      row.epoch,
      row.steps,
      row.learningRate.toExponential(4),
      row.trainLoss.toFixed(6),
      Number.isFinite(row.validationMacroAuroc) ? row.validationMacroAuroc.toFixed(6) : "",
      row.imagesPerSecond.toFixed(2),
      row.seconds.toFixed(2),
      (row.peakMemoryBytes / 2 ** 20).toFixed(1),
    ].join(","),
  );
  return `${[header, ...rows].join("\n")}\n`;
}

/** Training loss (left axis) and validation macro AUROC (right axis) per epoch, phases shaded. */
export function learningCurveSvg(history: readonly EpochMetrics[]): string {
  const width = 640;
  const height = 360;
  const left = 60;
  const right = 60;
  const top = 40;
  const bottom = 50;
  const plotWidth = width - left - right;
  const plotHeight = height - top - bottom;
  const count = Math.max(1, history.length);
  const x = (index: number) => left + (count === 1 ? plotWidth / 2 : (index / (count - 1)) * plotWidth);
  const losses = history.map((row) => row.trainLoss);
  const maxLoss = Math.max(1e-6, ...losses) * 1.05;
  const yLoss = (value: number) => top + plotHeight * (1 - value / maxLoss);
  const yAuroc = (value: number) => top + plotHeight * (1 - (value - 0.5) / 0.5);
  const path = (points: [number, number][]) =>
    points.map(([px, py], index) => `${index === 0 ? "M" : "L"}${px.toFixed(1)},${py.toFixed(1)}`).join(" ");
  const lossPath = path(history.map((row, index) => [x(index), yLoss(row.trainLoss)]));
  const aurocPoints = history
    .map((row, index) => [index, row.validationMacroAuroc] as const)
    .filter(([, value]) => Number.isFinite(value))
    .map(([index, value]) => [x(index), yAuroc(Math.max(0.5, value))] as [number, number]);
  const labels = history
    .map((row, index) =>
      index === 0 || history[index - 1].phase !== row.phase
        ? `<text x="${x(index).toFixed(1)}" y="${top - 6}" font-size="11" fill="#555">${row.phase}</text>`
        : "",
    )
    .join("");
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif">
<rect width="${width}" height="${height}" fill="white"/>
<text x="${width / 2}" y="20" font-size="14" text-anchor="middle">Learning curve</text>
<rect x="${left}" y="${top}" width="${plotWidth}" height="${plotHeight}" fill="none" stroke="#999"/>
${labels}
<path d="${lossPath}" fill="none" stroke="#1f77b4" stroke-width="2"/>
<path d="${path(aurocPoints)}" fill="none" stroke="#d62728" stroke-width="2"/>
<text x="${left - 8}" y="${top + 4}" font-size="11" text-anchor="end">${maxLoss.toFixed(3)}</text>
<text x="${left - 8}" y="${top + plotHeight}" font-size="11" text-anchor="end">0</text>
<text x="${width - right + 8}" y="${top + 4}" font-size="11">1.0</text>
<text x="${width - right + 8}" y="${top + plotHeight}" font-size="11">0.5</text>
<text x="${left}" y="${height - 15}" font-size="12" fill="#1f77b4">training loss (left)</text>
<text x="${width - right}" y="${height - 15}" font-size="12" fill="#d62728" text-anchor="end">validation macro AUROC (right)</text>
<text x="${width / 2}" y="${height - 30}" font-size="11" text-anchor="middle">epoch (${history.length} in all)</text>
</svg>`;
}

// ---------------------------------------------------------------------------------------------
// The run

function phasesOf(options: TrainRunOptions): Phase[] {
  if (options.strategy === "real")
    return [{ name: "real", epochs: options.epochs, learningRate: options.learningRate }];
  if (options.strategy === "mix")
    return [{ name: "mix", epochs: options.epochs, learningRate: options.learningRate }];
  return [
    { name: "pretrain", epochs: options.pretrainEpochs, learningRate: options.pretrainLearningRate },
    { name: "finetune", epochs: options.epochs, learningRate: options.learningRate },
  ];
}

/** The settings a resumed run must share with the run it continues. */
function runSignature(options: TrainRunOptions, spec: ModelSpec) {
  const {
    resume: _resume,
    progress: _progress,
    bootstrapRounds: _rounds,
    out: _out,
    stopAfterEpochs: _stop,
    // In spec.config when true; left out here so run.json of plain runs is unchanged.
    memoryEfficient: _memoryEfficient,
    signal: _signal,
    beforeWrite: _beforeWrite,
    onStep: _onStep,
    log: _log,
    ...rest
  } = options;
  return {
    ...rest,
    train: resolve(options.train),
    synthetic: options.synthetic && resolve(options.synthetic),
    spec,
  };
}

function validateOptions(options: TrainRunOptions): void {
  const problems: string[] = [];
  const positiveInteger = (name: string, value: number) => {
    if (!Number.isInteger(value) || value < 1)
      problems.push(`${name} must be a positive integer, got ${value}`);
  };
  positiveInteger("--batch-size", options.batchSize);
  positiveInteger("--epochs", options.epochs);
  if (options.strategy === "pretrain-finetune") positiveInteger("--pretrain-epochs", options.pretrainEpochs);
  if (!STRATEGIES.includes(options.strategy))
    problems.push(`--strategy must be one of ${STRATEGIES.join(", ")}, got "${options.strategy}"`);
  if (options.strategy !== "real" && !options.synthetic)
    problems.push(`--strategy ${options.strategy} needs --synthetic DIR`);
  if (options.strategy === "mix" && !(options.mixRatio > 0 && options.mixRatio < 1))
    problems.push(`--mix-ratio must lie strictly between 0 and 1, got ${options.mixRatio}`);
  if (options.strategy === "mix") {
    const synthetic = Math.round(options.batchSize * options.mixRatio);
    if (synthetic < 1 || synthetic >= options.batchSize)
      problems.push(
        `--mix-ratio ${options.mixRatio} leaves no ${synthetic < 1 ? "synthetic" : "real"} image in a batch of ${options.batchSize}`,
      );
  }
  if (!(options.learningRate > 0) || !(options.pretrainLearningRate > 0))
    problems.push("learning rates must be > 0");
  if (!options.heads.findings && !options.heads.sex && !options.heads.age && !options.heads.race)
    problems.push("--heads must name at least one of findings, sex, age, race");
  if (problems.length > 0) throw new Error(problems.join("; "));
}

export async function trainClassifierRun(
  gpu: Gpu,
  input: Partial<TrainRunOptions> & Pick<TrainRunOptions, "train" | "out">,
): Promise<TrainRunResult> {
  const options: TrainRunOptions = { ...DEFAULT_TRAIN_RUN, ...input };
  validateOptions(options);
  const log = options.log ?? stderrLog;
  const attributes: AttributeHeads = {
    sex: options.heads.sex,
    age: options.heads.age,
    race: options.heads.race,
  };
  const spec = modelSpec(options.config, {
    seed: options.seed,
    ...(options.imageSize ? { imageSize: options.imageSize } : {}),
    attributes,
    memoryEfficient: options.memoryEfficient,
  });
  if (spec.kind === "densenet" && spec.imageSize < minimumImageSize(spec.config)) {
    throw new Error(
      `--image-size ${spec.imageSize} is smaller than ${spec.config.name} accepts (${minimumImageSize(spec.config)} px)`,
    );
  }

  // Inputs, all checked before the output folder is touched.
  const real = loadSet(options.format, options.train, "--train");
  const inInstitution = (record: CxrRecord) =>
    options.institution === null || record.institution === options.institution;
  if (options.institution !== null && !real.records.some(inInstitution)) {
    const known = [...new Set(real.records.map((record) => record.institution).filter(Boolean))];
    throw new Error(
      `--institution ${options.institution}: no such institution in ${options.train} (has ${known.join(", ") || "none"})`,
    );
  }
  const realOwn = real.records.filter(inInstitution);
  const source = options.institution
    ? `${options.train} (institution ${options.institution})`
    : options.train;
  const trainRecords = split(realOwn, "train", source);
  const validRecords = split(realOwn, "valid", source);
  const testRecords = split(realOwn, "test", source);
  const outOfDistribution =
    options.institution === null
      ? []
      : real.records.filter((record) => record.split === "test" && !inInstitution(record));
  let syntheticRecords: CxrRecord[] = [];
  if (options.synthetic && options.strategy !== "real") {
    const synthetic = loadSet(options.syntheticFormat, options.synthetic, "--synthetic");
    const missing = real.labelColumns.filter((label) => !synthetic.labelColumns.includes(label));
    const extra = synthetic.labelColumns.filter((label) => !real.labelColumns.includes(label));
    if (missing.length > 0 || extra.length > 0) {
      throw new Error(
        `--synthetic ${options.synthetic}: its label columns differ from the real set's${missing.length ? `; lacks ${missing.join(", ")}` : ""}${extra.length ? `; has extra ${extra.join(", ")}` : ""}`,
      );
    }
    const syntheticTrain = synthetic.records.filter((record) => record.split === "train");
    syntheticRecords =
      syntheticTrain.length > 0
        ? syntheticTrain
        : synthetic.records.filter((record) => record.split === null);
    if (syntheticRecords.length === 0)
      throw new Error(
        `--synthetic ${options.synthetic}: no training images (train split, or records without a split)`,
      );
    await checkImageSample(syntheticRecords, spec.imageSize, "--synthetic");
  }
  await checkImageSample(trainRecords, spec.imageSize, "--train");
  if (trainRecords.length < options.batchSize && options.strategy !== "pretrain-finetune") {
    throw new Error(
      `${source}: ${trainRecords.length} training images are fewer than one batch of ${options.batchSize}`,
    );
  }

  const out = resolve(options.out);
  const signature = JSON.stringify(runSignature(options, spec));
  const checkpointPath = join(out, CHECKPOINT);
  if (options.resume) {
    if (!existsSync(checkpointPath)) throw new Error(`--resume: ${checkpointPath} does not exist`);
    const saved = readFileSync(join(out, RUN), "utf8");
    if (saved !== signature) {
      const before = JSON.parse(saved) as Record<string, unknown>;
      const now = JSON.parse(signature) as Record<string, unknown>;
      const changed = Object.keys({ ...before, ...now }).filter(
        (key) => JSON.stringify(before[key]) !== JSON.stringify(now[key]),
      );
      throw new Error(`--resume: the run in ${out} was started with other settings (${changed.join(", ")})`);
    }
  } else if (existsSync(checkpointPath)) {
    throw new Error(
      `${out} already holds a training run; pass --resume to continue it or choose another --out`,
    );
  }
  mkdirSync(out, { recursive: true });
  writeAtomic(join(out, RUN), signature);
  writeAtomic(join(out, SPEC), JSON.stringify(spec, null, 2));

  const model = createModel(gpu, spec);
  const names = [...model.namedParameters().keys()];
  const phases = phasesOf(options);
  const makeOptimizer = (phase: Phase) =>
    new AdamW(model.parameters(), {
      learningRate: phase.learningRate,
      weightDecay: options.weightDecay,
      parameterNames: names,
    });
  let state: TrainerState = {
    phaseIndex: 0,
    epochsDone: 0,
    step: 0,
    bestAuroc: Number.NEGATIVE_INFINITY,
    bestEpoch: 0,
    staleEpochs: 0,
    history: [],
    finished: false,
  };
  let optimizer = makeOptimizer(phases[0]);
  if (options.resume) {
    const peek = readSafetensors(checkpointPath).metadata.trainer;
    const phaseIndex = peek ? (JSON.parse(peek) as TrainerState).phaseIndex : 0;
    optimizer.release();
    optimizer = makeOptimizer(phases[Math.min(phaseIndex, phases.length - 1)]);
    state = await loadCheckpoint(checkpointPath, model, optimizer);
    log(
      `resuming ${out}: phase ${phases[Math.min(state.phaseIndex, phases.length - 1)].name}, ${state.epochsDone} epochs done`,
    );
  }

  let sessionEpochs = 0;
  const augment: AugmentConfig = options.augment ? DEFAULT_AUGMENT : NO_AUGMENT;
  const realPerMixBatch = options.batchSize - Math.round(options.batchSize * options.mixRatio);
  const stepsPerEpochOf = (phase: Phase) =>
    Math.floor(
      (phase.name === "pretrain" ? syntheticRecords.length : trainRecords.length) /
        (phase.name === "mix" ? realPerMixBatch : options.batchSize),
    );
  const plannedSteps = phases.reduce((sum, phase) => sum + stepsPerEpochOf(phase) * phase.epochs, 0);
  const stopped = (validationMacroAuroc: number): TrainRunResult => {
    optimizer.release();
    model.dispose();
    return { out, stopped: true, history: state.history, validationMacroAuroc, evaluations: [] };
  };

  while (!state.finished) {
    const phaseIndex = state.phaseIndex;
    const phase = phases[phaseIndex];
    const records =
      phase.name === "pretrain"
        ? syntheticRecords
        : phase.name === "mix"
          ? [...trainRecords, ...syntheticRecords]
          : trainRecords;
    const perBatchReal = phase.name === "mix" ? realPerMixBatch : options.batchSize;
    const sourceCount = phase.name === "pretrain" ? syntheticRecords.length : trainRecords.length;
    const stepsPerEpoch = Math.floor(sourceCount / perBatchReal);
    if (stepsPerEpoch < 1) {
      throw new Error(
        `${phase.name} phase: ${sourceCount} images are fewer than one batch of ${perBatchReal}`,
      );
    }
    const totalSteps = stepsPerEpoch * phase.epochs;
    const bestPath = join(out, `best-${phase.name}.safetensors`);
    while (state.epochsDone < phase.epochs && state.staleEpochs < options.patience) {
      const epoch = state.epochsDone;
      const epochSeed = options.seed * 1_000_003 + phaseIndex * 10_007 + epoch;
      const order = batchOrder(
        phase.name,
        trainRecords.length,
        syntheticRecords.length,
        sourceCount,
        perBatchReal,
        options.batchSize,
        stepsPerEpoch,
        epochSeed,
      );
      // A run stopped mid-epoch (signal) continues after the batches it did, with the same order and
      // augmentation seeds.
      const skip = state.batchesDone ?? 0;
      const stepsBefore = state.history.reduce((sum, row) => sum + row.steps, 0) + skip;
      gpu.pool.resetPeak();
      const started = performance.now();
      const losses: Tensor[] = [];
      let images = 0;
      let learningRate = 0;
      // Batches uploaded ahead (prefetch) but not yet trained on; released when the run stops early.
      const ahead = new Set<AttributeBatch>();
      let closed = false;
      const stream = batches(records, {
        batchSize: options.batchSize,
        imageSize: spec.imageSize,
        order: order.slice(skip * options.batchSize),
        targets: { policy: options.policy },
        dropLast: true,
        prefetch: 2,
        upload: async (batch: HostBatch) => {
          augmentImages(
            batch.images,
            batch.size,
            batch.imageSize,
            augment,
            epochSeed * 7919 + skip + batch.index,
          );
          const device = uploadWithAttributes(model, batch);
          if (closed) releaseUpload(device);
          else ahead.add(device);
          return device;
        },
      });
      for await (const batch of stream) {
        ahead.delete(batch.device);
        const loss = trainingLoss(model, batch.device, options.heads, options.lossWeights);
        backward(loss);
        clipGradNorm(model.parameters(), options.maxGradNorm).release();
        learningRate = cosineLearningRate(state.step, {
          baseLearningRate: phase.learningRate,
          warmupSteps: Math.min(options.warmupSteps, Math.floor(totalSteps / 4)),
          totalSteps,
        });
        optimizer.step(learningRate);
        optimizer.zeroGrad();
        losses.push(loss.reshapeInto([1]));
        releaseUpload(batch.device);
        images += batch.size;
        state.step++;
        // A step boundary for the kernels runtime: every few steps it drains the queue and collects
        // garbage (its workaround for a crash inside Dawn in long runs, Gpu.endStep; TRAINING.md).
        await gpu.endStep();
        if (options.progress)
          drawProgress(
            phase.name,
            epoch + 1,
            phase.epochs,
            skip + losses.length,
            stepsPerEpoch,
            images,
            started,
          );
        options.onStep?.({
          phase: phase.name,
          epoch: epoch + 1,
          epochs: phase.epochs,
          batch: skip + losses.length,
          batchesPerEpoch: stepsPerEpoch,
          step: stepsBefore + losses.length,
          totalSteps: plannedSteps,
        });
        if (options.signal?.aborted && skip + losses.length < stepsPerEpoch) {
          // Stop mid-epoch: checkpoint the weights, the optimizer and the position in the epoch.
          closed = true;
          for (const device of ahead) releaseUpload(device);
          ahead.clear();
          const values = await Promise.all(losses.map((tensor) => tensor.download()));
          for (const tensor of losses) tensor.release();
          state.batchesDone = skip + losses.length;
          state.partialLosses = [...(state.partialLosses ?? []), ...values.map((value) => value[0])];
          state.partialImages = (state.partialImages ?? 0) + images;
          state.partialSeconds = (state.partialSeconds ?? 0) + (performance.now() - started) / 1000;
          await options.beforeWrite?.();
          await saveCheckpoint(checkpointPath, model, optimizer, state);
          log(
            `stopped (asked) in ${phase.name} epoch ${epoch + 1} after batch ${state.batchesDone} of ${stepsPerEpoch}; continue with --resume`,
          );
          return stopped(state.history.at(-1)?.validationMacroAuroc ?? Number.NaN);
        }
      }
      const earlier = state.partialLosses ?? [];
      const stepCount = earlier.length + losses.length;
      const trainLoss =
        earlier.length === 0
          ? await epochMean(losses)
          : (earlier.reduce((sum, value) => sum + value, 0) + (await epochMean(losses)) * losses.length) /
            stepCount;
      const peakMemoryBytes = gpu.pool.snapshot().peakInUseBytes;
      const seconds = (performance.now() - started) / 1000 + (state.partialSeconds ?? 0);
      images += state.partialImages ?? 0;
      state.batchesDone = 0;
      state.partialLosses = [];
      state.partialImages = 0;
      state.partialSeconds = 0;
      const validationMacroAuroc = options.heads.findings
        ? macroAurocOf(validRecords, await predictProbabilities(model, validRecords, spec.imageSize))
        : Number.NaN;
      const metrics: EpochMetrics = {
        phase: phase.name,
        epoch: epoch + 1,
        steps: stepCount,
        learningRate,
        trainLoss,
        validationMacroAuroc,
        imagesPerSecond: images / seconds,
        seconds,
        peakMemoryBytes,
      };
      if (options.progress && process.stderr.isTTY) process.stderr.write("\n");
      log(
        `${phase.name} epoch ${epoch + 1}/${phase.epochs}: loss ${trainLoss.toFixed(4)}, validation macro AUROC ${Number.isFinite(validationMacroAuroc) ? validationMacroAuroc.toFixed(4) : "n/a"}, ${metrics.imagesPerSecond.toFixed(1)} images/s, peak GPU memory ${(peakMemoryBytes / 2 ** 20).toFixed(0)} MiB`,
      );
      await options.beforeWrite?.();
      state.history.push(metrics);
      state.epochsDone++;
      // Attribute-only runs select on the training loss (no finding AUROC to select on).
      const score = options.heads.findings ? validationMacroAuroc : -trainLoss;
      if (score > state.bestAuroc || !Number.isFinite(state.bestAuroc)) {
        state.bestAuroc = score;
        state.bestEpoch = epoch + 1;
        state.staleEpochs = 0;
        await model.save(bestPath, { phase: phase.name, epoch: String(epoch + 1) });
      } else {
        state.staleEpochs++;
      }
      await saveCheckpoint(checkpointPath, model, optimizer, state);
      writeAtomic(join(out, "metrics.csv"), metricsCsv(state.history));
      writeAtomic(join(out, "learning-curve.png"), await renderPng(learningCurveSvg(state.history)));
      sessionEpochs++;
      if (options.stopAfterEpochs !== null && sessionEpochs >= options.stopAfterEpochs) {
        log(`stopped after ${sessionEpochs} epochs as asked; continue with --resume`);
        return stopped(validationMacroAuroc);
      }
      if (options.signal?.aborted) {
        log(`stopped (asked) after ${phase.name} epoch ${epoch + 1}; continue with --resume`);
        return stopped(validationMacroAuroc);
      }
    }
    if (state.staleEpochs >= options.patience)
      log(
        `${phase.name}: stopped early after ${state.epochsDone} epochs (no better validation AUROC for ${options.patience})`,
      );
    // Continue from the selected (best) epoch of this phase.
    model.load(bestPath);
    log(`${phase.name}: selected epoch ${state.bestEpoch}`);
    const next = phaseIndex + 1;
    optimizer.release();
    optimizer = makeOptimizer(phases[Math.min(next, phases.length - 1)]);
    state = {
      ...state,
      phaseIndex: next,
      epochsDone: 0,
      step: 0,
      bestAuroc: Number.NEGATIVE_INFINITY,
      staleEpochs: 0,
      finished: next >= phases.length,
    };
    await options.beforeWrite?.();
    await saveCheckpoint(checkpointPath, model, optimizer, state);
  }
  optimizer.release();
  await options.beforeWrite?.();
  await model.save(join(out, MODEL), { config: JSON.stringify(spec) });

  // Predictions and evaluation.
  const predict = async (name: string, records: CxrRecord[]): Promise<PredictionTable | null> => {
    if (records.length === 0) return null;
    const probabilities = await predictProbabilities(model, records, spec.imageSize);
    const { table, excluded } = predictionTableFromRecords(name, records, probabilities);
    if (excluded > 0)
      log(`${name}: ${excluded} images without sex, age or race are left out of the predictions file`);
    writeAtomic(join(out, `predictions-${name}.csv`), formatPredictionsCsv(table));
    return table;
  };
  if (attributes.sex || attributes.age || attributes.race) {
    for (const [name, records] of [
      ["valid", validRecords],
      ["test", testRecords],
    ] as const) {
      writeAtomic(
        join(out, `predictions-attributes-${name}.csv`),
        await attributePredictionsCsv(model, records, spec.imageSize),
      );
    }
  }
  if (!options.heads.findings) {
    log(
      "attribute heads only: the finding classifier was not trained, so no finding predictions or evaluation",
    );
    model.dispose();
    return { out, stopped: false, history: state.history, validationMacroAuroc: Number.NaN, evaluations: [] };
  }
  const validation = await predict("valid", validRecords);
  const finalValidationAuroc = macroAurocOf(
    validRecords,
    await predictProbabilities(model, validRecords, spec.imageSize),
  );
  const evaluations: TrainRunResult["evaluations"] = [];
  const sets: [string, CxrRecord[]][] = [["test", testRecords]];
  if (outOfDistribution.length > 0) sets.push(["test-other-institutions", outOfDistribution]);
  for (const [name, records] of sets) {
    const predictions = await predict(name, records);
    if (!predictions || !validation) continue;
    const document = evaluatePredictions(
      { predictions, validation },
      { bootstrapRounds: options.bootstrapRounds, seed: options.seed, minimumDenominator: 20 },
    );
    const folder = join(out, `evaluation-${name}`);
    await writeEvaluationOutputs(document, folder);
    log(`\n## ${name} (${folder})\n`);
    log(renderSummary(document));
    evaluations.push({ name, folder, macroAuroc: document.overall.macroAuroc.value });
  }
  model.dispose();
  return {
    out,
    stopped: false,
    history: state.history,
    validationMacroAuroc: finalValidationAuroc,
    evaluations,
  };
}

/**
 * Record indices for one epoch. `mix`: each batch is `perBatchReal` real images followed by the rest
 * synthetic (indices after the real ones), the synthetic set cycling in its own shuffled order.
 */
function batchOrder(
  phase: Phase["name"],
  realCount: number,
  syntheticCount: number,
  sourceCount: number,
  perBatchReal: number,
  batchSize: number,
  steps: number,
  seed: number,
): number[] {
  if (phase !== "mix") return shuffledOrder(sourceCount, seed).slice(0, steps * batchSize);
  const real = shuffledOrder(realCount, seed);
  const synthetic = shuffledOrder(syntheticCount, seed + 1);
  const order: number[] = [];
  let syntheticIndex = 0;
  for (let step = 0; step < steps; step++) {
    for (let k = 0; k < perBatchReal; k++) order.push(real[step * perBatchReal + k]);
    for (let k = perBatchReal; k < batchSize; k++) {
      order.push(realCount + synthetic[syntheticIndex % syntheticCount]);
      syntheticIndex++;
    }
  }
  return order;
}

interface AttributeBatch extends DeviceBatch {
  attributes: ReturnType<typeof attributeTargets> | null;
}

function uploadWithAttributes(model: ImageClassifier, batch: HostBatch): AttributeBatch {
  const gpu = model.gpu;
  return {
    images: Tensor.upload(gpu, batch.images, [batch.size, 1, batch.imageSize, batch.imageSize]),
    labels: Tensor.upload(gpu, batch.labels, [batch.size, batch.labels.length / batch.size]),
    mask: Tensor.upload(gpu, batch.mask, [batch.size, batch.mask.length / batch.size]),
    attributes: attributeTargets(gpu, batch.records),
  };
}

function releaseUpload(batch: AttributeBatch): void {
  releaseBatch(batch);
  if (batch.attributes) for (const tensor of Object.values(batch.attributes.tensors)) tensor.release();
}

function drawProgress(
  phase: string,
  epoch: number,
  epochs: number,
  step: number,
  steps: number,
  images: number,
  started: number,
): void {
  if (!process.stderr.isTTY) return;
  const width = 30;
  const filled = Math.round((step / steps) * width);
  const rate = images / ((performance.now() - started) / 1000);
  process.stderr.write(
    `\r${phase} epoch ${epoch}/${epochs} [${"#".repeat(filled)}${".".repeat(width - filled)}] ${step}/${steps} batches, ${rate.toFixed(1)} images/s`,
  );
}

/**
 * The attribute heads' outputs beside the recorded values, one row per image: sex (probability of
 * male), age (years) and race (probability per class), for quality control of generated images.
 */
export async function attributePredictionsCsv(
  model: ImageClassifier,
  records: readonly CxrRecord[],
  imageSize: number,
  batchSize = 64,
): Promise<string> {
  if (!(model instanceof DenseNet)) throw new Error("attribute predictions need a DenseNet");
  const { sex, age, race } = model.config.attributes;
  const header = ["patient_id", "image_id"];
  if (sex) header.push("sex", "sex_prob_male");
  if (age) header.push("age", "age_pred");
  if (race) header.push("race", ...RACE_CLASSES.map((name) => `race_prob_${name}`));
  const lines = [header.join(",")];
  model.eval();
  const stream = batches(records, { batchSize, imageSize, prefetch: 2, upload: uploader(model) });
  for await (const batch of stream) {
    const outputs = noGrad(() =>
      tidy(() => {
        const all = model.forwardAll(batch.device.images);
        return [all.sex ? sigmoidOp(all.sex) : null, all.age, all.race ? softmax(all.race, -1) : null];
      }),
    );
    const [sexProbability, agePrediction, raceProbability] = await Promise.all(
      outputs.map((tensor) => tensor?.download() ?? Promise.resolve(null)),
    );
    for (const tensor of outputs) tensor?.release();
    batch.records.forEach((record, row) => {
      const cells = [record.patientId, record.imagePath];
      if (sex) cells.push(record.sex ?? "", sexProbability![row].toFixed(6));
      if (age)
        cells.push(
          record.age === null ? "" : String(record.age),
          (agePrediction![row] * AGE_SCALE).toFixed(2),
        );
      if (race)
        cells.push(
          record.race ?? "",
          ...RACE_CLASSES.map((_, k) => raceProbability![row * RACE_CLASSES.length + k].toFixed(6)),
        );
      lines.push(
        cells.map((cell) => (/[",\n]/.test(cell) ? `"${cell.replaceAll('"', '""')}"` : cell)).join(","),
      );
    });
    releaseBatch(batch.device);
  }
  model.train();
  return `${lines.join("\n")}\n`;
}
