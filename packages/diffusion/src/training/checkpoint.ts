/**
 * Training checkpoints: everything `--resume` needs to continue bit for bit.
 *
 *   OUT/checkpoint/model/            the live weights, a model directory (DiffusionModel.save)
 *   OUT/checkpoint/ema/              the EMA weights, a model directory (what `cxr generate` loads)
 *   OUT/checkpoint/optimizer.safetensors   AdamW moments (`<name>.exp_avg`, `.exp_avg_sq`) and step counts
 *   OUT/checkpoint/state.json        step, data order position, RNG offsets, EMA updates, options
 *
 * A checkpoint is written into a fresh temporary directory beside it and swapped in by renames
 * (old -> checkpoint.old, new -> checkpoint, then old removed), so a failed or interrupted save never
 * touches the last good checkpoint; `findCheckpoint` also accepts checkpoint.old when a crash fell
 * between the two renames.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from "node:fs";
import { join } from "node:path";
import { readSafetensors, type Tensor, type TensorToWrite, writeSafetensors } from "@cxr/kernels";
import { CheckpointError, type DiffusionModel, writeFileAtomic } from "../model/model.ts";

export const CHECKPOINT_DIR = "checkpoint";
export const CHECKPOINT_FORMAT = "cxr-diffusion-training/1";

export interface TrainingState {
  format: typeof CHECKPOINT_FORMAT;
  /** Optimizer steps done. */
  step: number;
  /** Data order: epoch and position (records consumed) within its shuffled order. */
  epoch: number;
  position: number;
  /** Philox offset of the noise generator. */
  noiseOffset: number;
  emaUpdates: number;
  imagesSeen: number;
  /** Seconds of training so far, over all sessions. */
  seconds: number;
  /** The options the run started with (checked on resume). */
  options: Record<string, unknown>;
}

export async function downloadState(state: Record<string, Tensor>): Promise<Map<string, TensorToWrite>> {
  const entries = await Promise.all(
    Object.entries(state).map(
      async ([name, tensor]) => [name, { shape: [...tensor.shape], data: await tensor.download() }] as const,
    ),
  );
  return new Map(
    entries.map(([name, entry]) => [name, { shape: entry.shape, data: Float32Array.from(entry.data) }]),
  );
}

export interface CheckpointContents {
  model: DiffusionModel;
  /** Swaps the EMA weights into the model and back (Ema.swap). */
  swapEma: () => void;
  optimizerState: Record<string, Tensor>;
  state: TrainingState;
}

/** Writes OUT/checkpoint atomically (see the file comment). `beforeSwap` lets tests inject a failure. */
export async function saveCheckpoint(
  out: string,
  contents: CheckpointContents,
  hooks: { beforeSwap?: () => void } = {},
): Promise<string> {
  const target = join(out, CHECKPOINT_DIR);
  const temporary = join(out, `${CHECKPOINT_DIR}.tmp-${process.pid}`);
  rmSync(temporary, { recursive: true, force: true });
  mkdirSync(temporary, { recursive: true });
  try {
    const metadata = { step: String(contents.state.step) };
    await contents.model.save(join(temporary, "model"), metadata);
    contents.swapEma();
    try {
      await contents.model.save(join(temporary, "ema"), { ...metadata, weights: "ema" });
    } finally {
      contents.swapEma();
    }
    writeSafetensors(
      join(temporary, "optimizer.safetensors"),
      await downloadState(contents.optimizerState),
      metadata,
    );
    writeFileAtomic(join(temporary, "state.json"), `${JSON.stringify(contents.state, null, 2)}\n`);
    hooks.beforeSwap?.();
  } catch (error) {
    rmSync(temporary, { recursive: true, force: true });
    throw new CheckpointError(
      `saving the checkpoint of step ${contents.state.step} failed (${(error as Error).message}); the previous checkpoint in ${target} is untouched`,
    );
  }
  const old = join(out, `${CHECKPOINT_DIR}.old`);
  rmSync(old, { recursive: true, force: true });
  if (existsSync(target)) renameSync(target, old);
  renameSync(temporary, target);
  rmSync(old, { recursive: true, force: true });
  return target;
}

/** The checkpoint directory of OUT (checkpoint, or checkpoint.old after a crash mid-swap), or null. */
export function findCheckpoint(out: string): string | null {
  for (const name of [CHECKPOINT_DIR, `${CHECKPOINT_DIR}.old`]) {
    const dir = join(out, name);
    if (existsSync(join(dir, "state.json"))) return dir;
  }
  return null;
}

export function readTrainingState(dir: string): TrainingState {
  const path = join(dir, "state.json");
  let state: TrainingState;
  try {
    state = JSON.parse(readFileSync(path, "utf8")) as TrainingState;
  } catch (error) {
    throw new CheckpointError(`cannot read ${path}: ${(error as Error).message}`);
  }
  if (state?.format !== CHECKPOINT_FORMAT) {
    throw new CheckpointError(`${path}: expected "format": "${CHECKPOINT_FORMAT}"`);
  }
  for (const key of ["step", "epoch", "position", "noiseOffset", "emaUpdates", "imagesSeen"] as const) {
    if (!Number.isSafeInteger(state[key]) || state[key] < 0) {
      throw new CheckpointError(
        `${path}: "${key}" must be an integer >= 0, got ${JSON.stringify(state[key])}`,
      );
    }
  }
  return state;
}

/** Reads optimizer.safetensors as name -> {shape, data}. */
export function readOptimizerFile(dir: string) {
  const path = join(dir, "optimizer.safetensors");
  try {
    return readSafetensors(path).tensors;
  } catch (error) {
    throw new CheckpointError(`cannot read ${path}: ${(error as Error).message}`);
  }
}
