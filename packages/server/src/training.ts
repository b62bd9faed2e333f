/**
 * Training jobs on @cxr/diffusion's trainDiffusion. The library loop takes an AbortSignal and writes
 * a checkpoint whenever it stops, and its resume is exact (same batches, noise and updates), so the
 * runner yields by preemption: when a generation arrives (or a cancel, or a drain) the signal stops
 * training after the current step with a checkpoint, `ctx.step()` runs the waiting jobs (or throws),
 * and training resumes from that checkpoint. A training interrupted by kill -9 resumes from its last
 * periodic checkpoint when the job runs again. On success the EMA model is published under the
 * models root by name (copied to a temporary folder, then renamed).
 */
import { existsSync } from "node:fs";
import { cp, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { findCheckpoint, TRAIN_DEFAULTS, trainDiffusion } from "@cxr/diffusion";
import type { Gpu } from "@cxr/kernels";
import { resolveUnderRoot } from "./paths.ts";
import { type JobContext, JobFailure, type JobOutcome, type JobRunner } from "./queue.ts";

export interface TrainingParams {
  kind: "diffusion";
  /** Dataset name under the datasets root (CheXpert layout or a prompt folder). */
  dataset: string;
  /** A named configuration of @cxr/diffusion (e.g. "phantom-tiny"). */
  config: string;
  steps: number;
  batchSize: number;
  seed: number;
  learningRate: number;
  checkpointEvery: number;
  /** Model name the trained (EMA) model is published under. */
  output: string;
}

export interface TrainingRunnerOptions {
  datasetsRoot: string;
  modelsRoot: string;
  /** Run folders (checkpoints, loss CSV and plot): `<trainingsRoot>/<job id>`. */
  trainingsRoot: string;
  gpu?: () => Promise<Gpu>;
  log?: (line: string) => void;
}

export class TrainingRunner implements JobRunner {
  readonly kinds = ["training"] as const;

  constructor(private readonly options: TrainingRunnerOptions) {}

  async run(ctx: JobContext): Promise<JobOutcome> {
    const params = ctx.job.params as unknown as TrainingParams;
    const data = resolveUnderRoot("dataset", this.options.datasetsRoot, params.dataset);
    if (!data)
      throw new JobFailure("unknown_dataset", `dataset "${params.dataset}" is not under the datasets root`);
    const target = join(this.options.modelsRoot, params.output);
    const out = join(this.options.trainingsRoot, ctx.job.id);
    const gpu = this.options.gpu ? await this.options.gpu() : undefined;
    const logEvery = Math.max(1, Math.min(10, Math.floor(params.steps / 20)));
    let step = 0;
    let preemptions = 0;
    for (;;) {
      const result = await trainDiffusion({
        ...TRAIN_DEFAULTS,
        data,
        config: params.config,
        out,
        steps: params.steps,
        batchSize: params.batchSize,
        seed: params.seed,
        learningRate: params.learningRate,
        checkpointEvery: params.checkpointEvery,
        logEvery,
        resume: findCheckpoint(out) !== null,
        gpu,
        signal: ctx.preempt,
        onProgress: (progress) => {
          step = progress.step;
          ctx.progress(progress.step, progress.totalSteps, `loss ${progress.loss.toFixed(5)}`);
        },
        log: (line) => this.options.log?.(`training ${ctx.job.id}: ${line}`),
      });
      step = result.steps;
      if (!result.stopped) {
        if (existsSync(target)) {
          throw new JobFailure("model_exists", `output: a model named "${params.output}" appeared meanwhile`);
        }
        const staging = join(this.options.modelsRoot, `.staging-${ctx.job.id}`);
        await rm(staging, { recursive: true, force: true });
        await cp(result.modelDir, staging, { recursive: true });
        await rename(staging, target);
        return {
          result: {
            model: params.output,
            steps: result.steps,
            imagesSeen: result.imagesSeen,
            seconds: result.seconds,
            preemptions,
            lossCsv: result.lossCsv,
          },
        };
      }
      // Stopped at a step boundary with a checkpoint: cancel/drain throw here, waiting jobs run here.
      preemptions++;
      await ctx.step(step, params.steps, "paused for other work");
    }
  }
}
