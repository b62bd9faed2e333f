import { type DataIssue, IssueLog, type OnError } from "../errors.ts";
import { decodeImage, ImageReadError } from "../images/decode.ts";
import { toModelInput } from "../images/resize.ts";
import type { CxrRecord } from "../records.ts";
import { labelTargets, type TargetOptions } from "./targets.ts";

export interface BatchOptions {
  batchSize: number;
  /** Side of the square model input, e.g. 512 for RoentGen-v2, 224 for DenseNet-121. */
  imageSize: number;
  /**
   * Record indices in batch order: a shuffledOrder() epoch, a BalancedSampler (endless: the caller
   * stops), or by default every record once, in order.
   */
  order?: Iterable<number>;
  /** Batches prepared ahead while the caller works on the current one; 0 prepares on demand. */
  prefetch: number;
  targets: Partial<TargetOptions>;
  /** An unreadable image: "skip" leaves it out of its batch (reported in `issues`), "fail" throws. */
  onError: OnError;
  /** Leave out a last batch smaller than batchSize (training usually wants equal batches). */
  dropLast: boolean;
}

export const DEFAULT_BATCH_OPTIONS: Omit<BatchOptions, "batchSize" | "imageSize"> = {
  prefetch: 2,
  targets: {},
  onError: "fail",
  dropLast: false,
};

/** A batch in host memory, laid out as the kernels expect it. */
export interface HostBatch {
  /** 0-based position in the sequence of batches prepared. */
  index: number;
  /** N: images in this batch (fewer than batchSize when images were skipped or at the end). */
  size: number;
  imageSize: number;
  /** N x 1 x S x S, row-major, in [-1, 1]. */
  images: Float32Array;
  /** N x L targets after the uncertainty policy. */
  labels: Float32Array;
  /** N x L, 1 where the target counts in the loss. */
  mask: Float32Array;
  records: CxrRecord[];
  /** Images of this batch that were skipped, each with its file, row and reason. */
  issues: DataIssue[];
}

export interface Batch<Device> extends HostBatch {
  /** What `upload` returned for this batch (e.g. GPU tensors); undefined without an upload hook. */
  device: Device;
}

/** Batches in a row that may have no readable image before the iterator gives up. */
const MAX_CONSECUTIVE_EMPTY_BATCHES = 10;

type BatchInput = Pick<BatchOptions, "batchSize" | "imageSize"> & Partial<BatchOptions>;

/**
 * Streams batches of decoded, padded, resized images with their label targets. While the caller works
 * on batch k (say, a training step on the GPU), batches k+1..k+prefetch are already being decoded (on
 * sharp's thread pool) and, with an `upload` hook, uploaded; so the data never waits for the model unless
 * decoding is slower than training.
 */
export function batches(records: readonly CxrRecord[], options: BatchInput): AsyncGenerator<Batch<undefined>>;
export function batches<Device>(
  records: readonly CxrRecord[],
  options: BatchInput & { upload: (batch: HostBatch) => Promise<Device> },
): AsyncGenerator<Batch<Device>>;
export async function* batches<Device>(
  records: readonly CxrRecord[],
  options: BatchInput & { upload?: (batch: HostBatch) => Promise<Device> },
): AsyncGenerator<Batch<Device | undefined>> {
  const resolved = { ...DEFAULT_BATCH_OPTIONS, ...options };
  const { batchSize, imageSize, prefetch, dropLast, upload } = resolved;
  if (!(Number.isInteger(batchSize) && batchSize > 0))
    throw new Error(`batchSize must be a positive integer, got ${batchSize}`);
  if (!(Number.isInteger(imageSize) && imageSize > 0))
    throw new Error(`imageSize must be a positive integer, got ${imageSize}`);
  if (!(Number.isInteger(prefetch) && prefetch >= 0))
    throw new Error(`prefetch must be an integer >= 0, got ${prefetch}`);

  const order = (resolved.order ?? records.keys())[Symbol.iterator]();
  let exhausted = false;
  let nextBatchIndex = 0;
  const queue: Promise<Batch<Device | undefined>>[] = [];

  const startNextBatch = () => {
    const chunk: CxrRecord[] = [];
    while (chunk.length < batchSize) {
      const step = order.next();
      if (step.done) {
        exhausted = true;
        break;
      }
      const record = records[step.value];
      if (record === undefined)
        throw new Error(`batch order index ${step.value} is outside 0..${records.length - 1}`);
      chunk.push(record);
    }
    if (chunk.length === 0 || (dropLast && chunk.length < batchSize)) {
      exhausted = true;
      return;
    }
    const prepared = prepareBatch(chunk, nextBatchIndex++, resolved).then(async (batch) => ({
      ...batch,
      device: upload === undefined || batch.size === 0 ? undefined : await upload(batch),
    }));
    // If the caller stops early, a failed batch nobody awaits must not become an unhandled rejection;
    // a caller who does await it still gets the error.
    prepared.catch(() => {});
    queue.push(prepared);
  };

  let emptyInARow = 0;
  while (true) {
    if (queue.length === 0 && !exhausted) startNextBatch();
    const current = queue.shift();
    if (current === undefined) return;
    while (queue.length < prefetch && !exhausted) startNextBatch();
    const batch = await current;
    if (batch.size === 0) {
      if (++emptyInARow >= MAX_CONSECUTIVE_EMPTY_BATCHES) {
        throw new Error(
          `${emptyInARow} batches in a row had no readable image; last problem: ${batch.issues.at(-1)?.message}`,
        );
      }
      continue;
    }
    emptyInARow = 0;
    yield batch;
  }
}

async function prepareBatch(
  chunk: CxrRecord[],
  index: number,
  options: Pick<BatchOptions, "imageSize" | "onError" | "targets">,
): Promise<HostBatch> {
  const { imageSize } = options;
  const decoded = await Promise.all(
    chunk.map(async (record) => {
      try {
        return toModelInput(await decodeImage(record.imagePath), imageSize);
      } catch (error) {
        return error instanceof Error ? error : new Error(String(error));
      }
    }),
  );
  const log = new IssueLog(options.onError);
  const kept: CxrRecord[] = [];
  const pixels: Float32Array[] = [];
  chunk.forEach((record, position) => {
    const result = decoded[position];
    if (result instanceof Error) {
      log.report({
        kind: result instanceof ImageReadError ? result.kind : "unreadable-image",
        file: record.source.file,
        row: record.source.row,
        column: record.source.imageColumn ?? null,
        message: result.message,
      });
      log.skip();
      return;
    }
    kept.push(record);
    pixels.push(result);
  });
  const area = imageSize * imageSize;
  const images = new Float32Array(kept.length * area);
  for (const [position, image] of pixels.entries()) images.set(image, position * area);
  const { target, mask } = labelTargets(kept, options.targets);
  return {
    index,
    size: kept.length,
    imageSize,
    images,
    labels: target,
    mask,
    records: kept,
    issues: log.issues,
  };
}
