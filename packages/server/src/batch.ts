/**
 * Generation batches: a grid of cells (prompts or structured demographics and findings) x seeds,
 * written as a CheXpert-layout dataset under the datasets root and split into shard jobs.
 *
 *   <name>/train/patient<cell>/study<seed index>/view1_frontal.png   (+ .json sidecar beside it)
 *   <name>/train.csv       CheXpert columns + Race, Institution ("synthetic"), Prompt
 *   <name>/manifest.json   request, shards, counts; written when every shard has finished
 *
 * A shard is an ordinary job (kind `generation-shard`) with the list of items it makes; the parent
 * (kind `generation-batch`) only records the batch. A shard skips every item whose PNG and sidecar
 * already exist (both written atomically), so a shard re-run after a crash, on this machine or on
 * another worker sharing the folder, makes only what is missing. Anything that can describe its
 * items the same way (the synthetic-dataset builder) can submit shards through `submitShards`.
 */
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { CHEXPERT_LABELS, CSV_COLUMNS, parsePrompt } from "@cxr/data";
import type { Precision } from "./config.ts";
import {
  type ImageGenerator,
  type SamplerName,
  type SamplingFields,
  type SpacingName,
  type StructuredPrompt,
  withSamplingDefaults,
} from "./generation.ts";
import { writeFileAtomic } from "./paths.ts";
import { type JobContext, JobFailure, type JobOutcome, type JobRunner, type WorkQueue } from "./queue.ts";
import type { Job, JobProgress, JobStore } from "./store.ts";

export type BatchCell = { prompt: string } | { structured: StructuredPrompt };

export interface ShardItem {
  cell: number;
  seedIndex: number;
  seed: number;
  prompt?: string;
  structured?: StructuredPrompt;
  /** CheXpert-style path relative to the datasets root: `<name>/train/patient.../view1_frontal.png`. */
  path: string;
}

export interface ShardParams {
  batchId: string;
  dataset: string;
  model: string;
  steps: number;
  guidance: number;
  sampler: SamplerName;
  /** Absent in shards queued before the field existed: "leading". */
  spacing?: SpacingName;
  /** Absent in shards queued before the field existed: 0. */
  guidanceRescale?: number;
  /** Absent in shards queued before the field existed: "". */
  negativePrompt?: string;
  /** Absent in shards queued before the field existed: 1. */
  negativeGuidance?: number;
  bitDepth: 8 | 16;
  /** Absent in shards queued before the field existed: f32. */
  precision?: Precision;
  items: ShardItem[];
}

export interface BatchParams {
  name: string;
  model: string;
  cells: BatchCell[];
  seeds: number[];
  steps: number;
  guidance: number;
  sampler: SamplerName;
  spacing?: SpacingName;
  guidanceRescale?: number;
  negativePrompt?: string;
  negativeGuidance?: number;
  bitDepth: 8 | 16;
  precision?: Precision;
  shardSize: number;
  /** "redis" when the shards went to BullMQ (ids `<batch>-<k>`); absent for the in-process queue. */
  queue?: "redis";
}

export const BATCH_KIND = "generation-batch";
export const SHARD_KIND = "generation-shard";

/** The items of a batch in grid order (cell-major), with their CheXpert-layout paths. */
export function batchItems(params: BatchParams): ShardItem[] {
  const items: ShardItem[] = [];
  params.cells.forEach((cell, cellIndex) => {
    params.seeds.forEach((seed, seedIndex) => {
      const patient = `patient${String(cellIndex + 1).padStart(5, "0")}`;
      items.push({
        cell: cellIndex,
        seedIndex,
        seed,
        ...cell,
        path: `${params.name}/train/${patient}/study${seedIndex + 1}/view1_frontal.png`,
      });
    });
  });
  return items;
}

/** The shards of a batch: consecutive runs of `shardSize` items in grid order. */
export function planShards(batchId: string, stored: BatchParams, items = batchItems(stored)): ShardParams[] {
  const params = withSamplingDefaults(stored);
  const shards: ShardParams[] = [];
  for (let start = 0; start < items.length; start += params.shardSize) {
    shards.push({
      batchId,
      dataset: params.name,
      model: params.model,
      steps: params.steps,
      guidance: params.guidance,
      sampler: params.sampler,
      spacing: params.spacing,
      guidanceRescale: params.guidanceRescale,
      negativePrompt: params.negativePrompt,
      negativeGuidance: params.negativeGuidance,
      bitDepth: params.bitDepth,
      precision: params.precision,
      items: items.slice(start, start + params.shardSize),
    });
  }
  return shards;
}

/** Inserts the batch record and its shard jobs in one transaction. */
export function submitBatch(
  queue: WorkQueue,
  params: BatchParams,
  shardPriority: number,
): { batch: Job; shards: Job[] } {
  const items = batchItems(params);
  const [batch] = queue.store.insertMany([
    { kind: BATCH_KIND, priority: shardPriority, params: { ...params }, state: "running" },
  ]);
  const shards = planShards(batch.id, params, items);
  try {
    const jobs = queue.submit(
      shards.map((shard) => ({
        kind: SHARD_KIND,
        priority: shardPriority,
        params: { ...shard },
        parentId: batch.id,
      })),
    );
    return { batch, shards: jobs };
  } catch (error) {
    queue.store.finish(batch.id, "failed", {
      error: { code: "not_queued", message: (error as Error).message },
    });
    throw error;
  }
}

/**
 * Makes one item of a shard unless its PNG and sidecar are already on disk (both are written
 * atomically, the sidecar last, so their presence means the item is complete).
 */
export async function makeShardItem(
  generator: ImageGenerator,
  datasetsRoot: string,
  params: ShardParams & SamplingFields,
  item: ShardItem,
  onStep: (step: number, total: number) => void,
  beforeWrite?: () => Promise<void>,
): Promise<{ made: boolean; path: string; sidecarPath: string }> {
  const path = join(datasetsRoot, item.path);
  const sidecarPath = path.replace(/\.png$/, ".json");
  if (existsSync(path) && existsSync(sidecarPath)) return { made: false, path, sidecarPath };
  const image = await generator.generate(
    {
      model: params.model,
      prompt: item.prompt,
      structured: item.structured,
      steps: params.steps,
      guidance: params.guidance,
      sampler: params.sampler,
      spacing: params.spacing,
      guidanceRescale: params.guidanceRescale,
      negativePrompt: params.negativePrompt,
      negativeGuidance: params.negativeGuidance,
      seed: item.seed,
      bitDepth: params.bitDepth,
      precision: params.precision,
    },
    onStep,
  );
  const sidecar = { ...image.sidecar, batch: params.batchId, cell: item.cell, seedIndex: item.seedIndex };
  await beforeWrite?.();
  await writeFileAtomic(path, image.png);
  await writeFileAtomic(sidecarPath, `${JSON.stringify(sidecar, null, 2)}\n`);
  return { made: true, path, sidecarPath };
}

/** Makes the items of one shard, skipping those already on disk. */
export class ShardRunner implements JobRunner {
  readonly kinds = [SHARD_KIND] as const;

  constructor(
    private readonly generator: ImageGenerator,
    private readonly datasetsRoot: string,
    /** Called after each item is written (made) or found on disk (skipped). */
    private readonly onItem?: (event: { shard: string; path: string; made: boolean }) => void,
  ) {}

  async run(ctx: JobContext): Promise<JobOutcome> {
    const params = withSamplingDefaults(ctx.job.params as unknown as ShardParams);
    if (!this.generator.hasModel(params.model)) {
      throw new JobFailure("unknown_model", `model "${params.model}" is not under the models root`);
    }
    const total = params.items.length * params.steps;
    let made = 0;
    let skipped = 0;
    for (const [index, item] of params.items.entries()) {
      const done = index * params.steps;
      const {
        made: wrote,
        path,
        sidecarPath,
      } = await makeShardItem(
        this.generator,
        this.datasetsRoot,
        params,
        item,
        (step) => {
          ctx.progress(done + step, total);
          ctx.check();
        },
        () => ctx.guard(),
      );
      this.onItem?.({ shard: ctx.job.id, path: item.path, made: wrote });
      if (wrote) made++;
      else skipped++;
      ctx.store.addImage({ jobId: ctx.job.id, index, seed: item.seed, path, sidecarPath });
      await ctx.step(done + params.steps, total);
    }
    return {
      result: { made, skipped, items: params.items.length },
      profile: await this.generator.takeProfile?.(),
    };
  }
}

const SEX_COLUMN = { female: "Female", male: "Male" } as const;

/** One CSV row per item, in the phantom's CheXpert columns (labels 1.0 for the cell's findings). */
export function csvRowOf(item: ShardItem): string[] {
  let sex = "";
  let age = "";
  let race = "";
  let findings: string[] = [];
  let prompt = item.prompt ?? "";
  if (item.structured) {
    sex = SEX_COLUMN[item.structured.sex];
    age = String(item.structured.age);
    race = item.structured.race ?? "";
    findings = item.structured.findings;
    prompt = "";
  } else if (item.prompt) {
    const parts = parsePrompt(item.prompt);
    if (parts) {
      sex = SEX_COLUMN[parts.sex];
      age = String(parts.age);
      race = parts.race ?? "";
    }
  }
  const labels = CHEXPERT_LABELS.map((label) => {
    if (!item.structured) return "";
    if (label === "No Finding") return findings.length === 0 ? "1.0" : "";
    return findings.includes(label) ? "1.0" : "";
  });
  return [item.path, sex, age, "Frontal", "PA", ...labels, race, "synthetic", prompt];
}

const csvCell = (text: string) => (/[",\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text);

/**
 * Finishes batches whose shards have all ended: writes train.csv (the prompt of structured cells is
 * read from the sidecars) and manifest.json atomically, then marks the batch succeeded, or failed
 * when a shard failed or was cancelled. Safe to call again (after a crash it redoes the same files).
 */
export async function settleBatches(queue: WorkQueue, datasetsRoot: string): Promise<void> {
  const store = queue.store;
  for (const batch of store.list({ kind: BATCH_KIND, state: "running", limit: 1000 })) {
    const params = batch.params as unknown as BatchParams;
    if (params.queue === "redis") continue;
    const position = (shard: Job) => {
      const first = (shard.params as unknown as ShardParams).items[0];
      return first.cell * params.seeds.length + first.seedIndex;
    };
    const shards = store
      .list({ parentId: batch.id, limit: 100_000 })
      .sort((a, b) => position(a) - position(b));
    if (shards.some((shard) => shard.state === "queued" || shard.state === "running")) continue;
    const bad = shards.filter((shard) => shard.state !== "succeeded");
    if (bad.length > 0) {
      const state = bad.every((shard) => shard.state === "cancelled") ? "cancelled" : "failed";
      store.finish(batch.id, state, {
        error: {
          code: `shard_${bad[0].state}`,
          message: `${bad.length} of ${shards.length} shards ${bad[0].state}`,
        },
      });
      queue.announce({ type: state === "cancelled" ? "cancelled" : "failed", job: store.get(batch.id)! });
      continue;
    }
    const summary = shards.map((shard) => ({
      id: shard.id,
      items: (shard.params.items as unknown[]).length,
      attempts: shard.attempts,
    }));
    await writeBatchOutputs(store, batch, summary, datasetsRoot);
    queue.announce({ type: "done", job: store.get(batch.id)! });
  }
}

/**
 * Records a batch's progress (images of finished shards, of cells x seeds, with an ETA from the
 * batch's age) when one of its shards finishes, and publishes it as the batch's progress event.
 */
export function reportBatchProgress(queue: WorkQueue, shard: Job): void {
  if (!shard.parentId) return;
  const batch = queue.store.get(shard.parentId);
  if (batch?.state !== "running") return;
  const params = batch.params as unknown as BatchParams;
  const total = params.cells.length * params.seeds.length;
  const shards = queue.store.list({ parentId: batch.id, limit: 100_000 });
  const done = shards
    .filter((entry) => entry.state === "succeeded")
    .reduce((sum, entry) => sum + (entry.params.items as unknown[]).length, 0);
  const elapsed = (Date.now() - batch.createdAt) / 1000;
  const progress: JobProgress = {
    step: done,
    total,
    etaSeconds: done > 0 ? Math.max(0, (elapsed / done) * (total - done)) : null,
    message: `${shards.filter((entry) => entry.state === "succeeded").length} of ${shards.length} shards`,
  };
  queue.store.setProgress(batch.id, progress);
  queue.announce({ type: "progress", job: queue.store.get(batch.id)!, progress });
}

/** Writes train.csv and manifest.json of a finished batch and marks it succeeded. */
export async function writeBatchOutputs(
  store: JobStore,
  batch: Job,
  shards: { id: string; items: number; attempts: number }[],
  datasetsRoot: string,
): Promise<void> {
  const params = withSamplingDefaults(batch.params as unknown as BatchParams);
  const rows: string[][] = [];
  for (const item of batchItems(params)) {
    const row = csvRowOf(item);
    if (item.structured) {
      const sidecar = JSON.parse(
        await readFile(join(datasetsRoot, item.path.replace(/\.png$/, ".json")), "utf8"),
      );
      row[row.length - 1] = String(sidecar.prompt ?? "");
    }
    rows.push(row);
  }
  const csv = [CSV_COLUMNS as readonly string[], ...rows].map((row) => row.map(csvCell).join(",")).join("\n");
  const folder = join(datasetsRoot, params.name);
  await writeFileAtomic(join(folder, "train.csv"), `${csv}\n`);
  const manifest = {
    format: "cxr-generation-batch/1",
    batch: batch.id,
    name: params.name,
    model: params.model,
    cells: params.cells,
    seeds: params.seeds,
    steps: params.steps,
    guidance: params.guidance,
    sampler: params.sampler,
    spacing: params.spacing,
    guidanceRescale: params.guidanceRescale,
    negativePrompt: params.negativePrompt,
    negativeGuidance: params.negativeGuidance,
    bitDepth: params.bitDepth,
    precision: params.precision,
    images: rows.length,
    shards,
    createdAt: new Date(batch.createdAt).toISOString(),
    completedAt: new Date().toISOString(),
  };
  await writeFileAtomic(join(folder, "manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);
  store.finish(batch.id, "succeeded", {
    result: {
      dataset: params.name,
      images: rows.length,
      shards: shards.length,
      queue: params.queue ?? "local",
    },
  });
}
