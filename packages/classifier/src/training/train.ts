/**
 * Trains a multi-label classifier on records with our kernels: batches are decoded and uploaded
 * ahead of the step (prefetch), the loss is masked BCE-with-logits (uncertain labels ignored under
 * U-Ignore), AdamW with a cosine schedule. The loss is read back once per epoch, never per step.
 */
import { batches, type CxrRecord, type HostBatch, shuffledOrder, type UncertaintyPolicy } from "@cxr/data";
import {
  AdamW,
  backward,
  bceWithLogitsLoss,
  clipGradNorm,
  concat,
  cosineLearningRate,
  mean,
  noGrad,
  sigmoidOp,
  Tensor,
  tidy,
} from "@cxr/kernels";
import type { ImageClassifier } from "./models.ts";

export interface TrainConfig {
  epochs: number;
  batchSize: number;
  imageSize: number;
  learningRate: number;
  weightDecay: number;
  warmupSteps: number;
  maxGradNorm: number;
  policy: UncertaintyPolicy;
  seed: number;
}

export const DEFAULT_TRAIN_CONFIG: TrainConfig = {
  epochs: 6,
  batchSize: 32,
  imageSize: 64,
  learningRate: 3e-3,
  weightDecay: 1e-4,
  warmupSteps: 20,
  maxGradNorm: 1,
  policy: "ignore",
  seed: 1,
};

export interface EpochReport {
  epoch: number;
  meanLoss: number;
  images: number;
  seconds: number;
}

export interface DeviceBatch {
  images: Tensor;
  labels: Tensor;
  mask: Tensor;
}

export function uploader(model: ImageClassifier) {
  return async (batch: HostBatch): Promise<DeviceBatch> => ({
    images: Tensor.upload(model.gpu, batch.images, [batch.size, 1, batch.imageSize, batch.imageSize]),
    labels: Tensor.upload(model.gpu, batch.labels, [batch.size, batch.labels.length / batch.size]),
    mask: Tensor.upload(model.gpu, batch.mask, [batch.size, batch.mask.length / batch.size]),
  });
}

export function releaseBatch(batch: DeviceBatch): void {
  batch.images.release();
  batch.labels.release();
  batch.mask.release();
}

export async function trainClassifier(
  model: ImageClassifier,
  records: readonly CxrRecord[],
  overrides: Partial<TrainConfig> = {},
  onEpoch: (report: EpochReport) => void = () => {},
): Promise<EpochReport[]> {
  const config = { ...DEFAULT_TRAIN_CONFIG, ...overrides };
  if (records.length < config.batchSize) {
    throw new Error(
      `trainClassifier: ${records.length} training images are fewer than one batch of ${config.batchSize}`,
    );
  }
  const optimizer = new AdamW(model.parameters(), {
    learningRate: config.learningRate,
    weightDecay: config.weightDecay,
  });
  const stepsPerEpoch = Math.floor(records.length / config.batchSize);
  const totalSteps = stepsPerEpoch * config.epochs;
  const reports: EpochReport[] = [];
  let step = 0;
  model.train();
  for (let epoch = 0; epoch < config.epochs; epoch++) {
    const started = performance.now();
    const losses: Tensor[] = [];
    let images = 0;
    const stream = batches(records, {
      batchSize: config.batchSize,
      imageSize: config.imageSize,
      order: shuffledOrder(records.length, config.seed * 1000 + epoch),
      targets: { policy: config.policy },
      dropLast: true,
      prefetch: 2,
      upload: uploader(model),
    });
    for await (const batch of stream) {
      const loss = bceWithLogitsLoss(
        model.forward(batch.device.images),
        batch.device.labels,
        batch.device.mask,
      );
      backward(loss);
      clipGradNorm(model.parameters(), config.maxGradNorm).release();
      optimizer.step(
        cosineLearningRate(step, {
          baseLearningRate: config.learningRate,
          warmupSteps: config.warmupSteps,
          totalSteps,
        }),
      );
      optimizer.zeroGrad();
      losses.push(loss.reshapeInto([1]));
      releaseBatch(batch.device);
      images += batch.size;
      step++;
    }
    const meanLoss = await epochMean(losses);
    const report = { epoch: epoch + 1, meanLoss, images, seconds: (performance.now() - started) / 1000 };
    reports.push(report);
    onEpoch(report);
  }
  return reports;
}

/** One read-back per epoch: the per-step losses are averaged on the GPU. */
export async function epochMean(losses: Tensor[]): Promise<number> {
  const stacked = noGrad(() => tidy(() => mean(concat(losses, 0))));
  const value = (await stacked.download())[0];
  stacked.release();
  for (const loss of losses) loss.release();
  return value;
}

/** Sigmoid probabilities [records, labels] in evaluation mode (running batch-norm statistics). */
export async function predictProbabilities(
  model: ImageClassifier,
  records: readonly CxrRecord[],
  imageSize: number,
  batchSize = 64,
): Promise<Float32Array> {
  model.eval();
  const outputs: Float32Array[] = [];
  const stream = batches(records, { batchSize, imageSize, prefetch: 2, upload: uploader(model) });
  for await (const batch of stream) {
    const probabilities = noGrad(() => tidy(() => sigmoidOp(model.forward(batch.device.images))));
    outputs.push(await probabilities.download());
    probabilities.release();
    releaseBatch(batch.device);
  }
  model.train();
  const total = new Float32Array(outputs.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of outputs) {
    total.set(part, offset);
    offset += part.length;
  }
  return total;
}
