/**
 * Training jobs: diffusion models on @cxr/diffusion's trainDiffusion, classifiers on
 * @cxr/classifier's trainClassifierRun (strategies real, mix, pretrain-finetune). Both library loops
 * take an AbortSignal, stop after the current step with a checkpoint, and resume exactly; for
 * trainDiffusion: The library loop takes an AbortSignal and writes
 * a checkpoint whenever it stops, and its resume is exact (same batches, noise and updates), so the
 * runner yields by preemption: when a generation arrives (or a cancel, or a drain) the signal stops
 * training after the current step with a checkpoint, `ctx.step()` runs the waiting jobs (or throws),
 * and training resumes from that checkpoint. A training interrupted by kill -9 resumes from its last
 * periodic checkpoint when the job runs again. On success the EMA model is published under the
 * models root by name (copied to a temporary folder, then renamed).
 */
import { existsSync } from "node:fs";
import { cp, readFile, rename, rm, writeFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { type Strategy, trainClassifierRun } from "@cxr/classifier";
import { findCheckpoint, TRAIN_DEFAULTS, trainDiffusion } from "@cxr/diffusion";
import { defaultGpu, type Gpu } from "@cxr/kernels";
import { resolveUnderRoot } from "./paths.ts";
import { type JobContext, JobFailure, JobInterrupted, type JobOutcome, type JobRunner } from "./queue.ts";

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

/** A classifier training: `cxr train classifier`'s run on datasets named under the datasets root. */
export interface ClassifierTrainingParams {
  kind: "classifier";
  /** Real dataset (CheXpert layout with train, valid and test splits). */
  dataset: string;
  /** A DenseNet config name of @cxr/classifier or "small-cnn". */
  config: string;
  strategy: Strategy;
  /** Synthetic dataset name (mix and pretrain-finetune). */
  synthetic?: string;
  mixRatio: number;
  epochs: number;
  pretrainEpochs: number;
  batchSize: number;
  imageSize?: number;
  learningRate: number;
  seed: number;
  institution?: string;
  bootstrapRounds: number;
  /** Name the classifier folder (model.json, model.safetensors, predictions, evaluations) is published under. */
  output: string;
}

/** Files of a classifier run that are not published (resume state). */
const UNPUBLISHED = /^(checkpoint\.safetensors|best-.*\.safetensors|run\.json|\.publishing)$|\.tmp-/;

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
    const kind = (ctx.job.params as { kind?: string }).kind;
    if (kind === "classifier") return this.runClassifier(ctx);
    const params = ctx.job.params as unknown as TrainingParams;
    const data = this.dataset("dataset", params.dataset);
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
        beforeWrite: () => ctx.guard(),
        onProgress: (progress) => {
          step = progress.step;
          ctx.progress(progress.step, progress.totalSteps, `loss ${progress.loss.toFixed(5)}`);
        },
        log: (line) => this.options.log?.(`training ${ctx.job.id}: ${line}`),
      });
      step = result.steps;
      if (!result.stopped) {
        await this.publish(ctx, result.modelDir, params.output);
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

  private dataset(field: string, name: string): string {
    const path = resolveUnderRoot(field, this.options.datasetsRoot, name);
    if (!path) throw new JobFailure("unknown_dataset", `${field}: "${name}" is not under the datasets root`);
    return path;
  }

  /**
   * Copies a finished run's folder to `MODELS/<output>` (a temporary folder, then a rename). A mark in
   * the run folder, written before the rename, lets a retry of the same job (its worker died after
   * publishing) see that the model there is its own.
   */
  private async publish(ctx: JobContext, from: string, output: string, filter?: (name: string) => boolean) {
    const target = join(this.options.modelsRoot, output);
    const mark = join(this.options.trainingsRoot, ctx.job.id, ".publishing");
    await ctx.guard();
    if (existsSync(target)) {
      if (existsSync(mark) && (await readFile(mark, "utf8")) === output) return;
      throw new JobFailure("model_exists", `output: a model named "${output}" appeared meanwhile`);
    }
    const staging = join(this.options.modelsRoot, `.staging-${ctx.job.id}`);
    await rm(staging, { recursive: true, force: true });
    await cp(from, staging, { recursive: true, filter: filter && ((path) => filter(basename(path))) });
    await writeFile(mark, output);
    await rename(staging, target);
  }

  /**
   * trainClassifierRun with the job's preemption signal: it stops after the current step with a
   * checkpoint (the position in the epoch included), `ctx.step()` runs waiting generations or throws
   * on cancel/drain, and the next call resumes from the checkpoint. After kill -9 the job runs again
   * and resumes from the last checkpoint written (end of an epoch, or a preemption).
   */
  private async runClassifier(ctx: JobContext): Promise<JobOutcome> {
    const params = ctx.job.params as unknown as ClassifierTrainingParams;
    const train = this.dataset("dataset", params.dataset);
    const synthetic = params.synthetic ? this.dataset("synthetic", params.synthetic) : null;
    const out = join(this.options.trainingsRoot, ctx.job.id);
    const gpu = this.options.gpu ? await this.options.gpu() : await defaultGpu();
    const roots = [this.options.datasetsRoot, this.options.trainingsRoot];
    // Library messages name absolute paths; the client sees names relative to the roots.
    const clean = (message: string) =>
      roots.reduce((text, root) => text.replaceAll(`${root}/`, "").replaceAll(root, "."), message);
    let step = 0;
    let total = 1;
    let preemptions = 0;
    for (;;) {
      let result: Awaited<ReturnType<typeof trainClassifierRun>>;
      try {
        result = await trainClassifierRun(gpu, {
          train,
          format: "chexpert",
          synthetic,
          syntheticFormat: "chexpert",
          strategy: params.strategy,
          mixRatio: params.mixRatio,
          config: params.config,
          out,
          resume: existsSync(join(out, "checkpoint.safetensors")),
          institution: params.institution ?? null,
          imageSize: params.imageSize ?? null,
          batchSize: params.batchSize,
          epochs: params.epochs,
          learningRate: params.learningRate,
          pretrainEpochs: params.pretrainEpochs,
          pretrainLearningRate: params.learningRate,
          seed: params.seed,
          bootstrapRounds: params.bootstrapRounds,
          progress: false,
          stopAfterEpochs: null,
          signal: ctx.preempt,
          beforeWrite: () => ctx.guard(),
          onStep: (progress) => {
            step = progress.step;
            total = progress.totalSteps;
            ctx.progress(step, total, `${progress.phase} epoch ${progress.epoch}/${progress.epochs}`);
          },
          log: (line) => this.options.log?.(`training ${ctx.job.id}: ${line.trim()}`),
        });
      } catch (error) {
        if (error instanceof JobInterrupted || error instanceof JobFailure) throw error;
        // The run checks its inputs (splits, label columns, image sizes, settings) before training.
        throw new JobFailure("training_failed", clean((error as Error).message ?? String(error)));
      }
      if (!result.stopped) {
        await this.publish(ctx, out, params.output, (name) => !UNPUBLISHED.test(name));
        const test = result.evaluations.find((entry) => entry.name === "test");
        return {
          result: {
            model: params.output,
            kind: "classifier",
            strategy: params.strategy,
            phases: [...new Set(result.history.map((row) => row.phase))],
            epochs: result.history.length,
            steps: result.history.reduce((sum, row) => sum + row.steps, 0),
            validationMacroAuroc: Number.isFinite(result.validationMacroAuroc)
              ? result.validationMacroAuroc
              : null,
            testMacroAuroc: test?.macroAuroc ?? null,
            preemptions,
            evaluations: result.evaluations.map((entry) => ({
              name: entry.name,
              macroAuroc: entry.macroAuroc,
            })),
          },
        };
      }
      preemptions++;
      await ctx.step(step, total, "paused for other work");
    }
  }
}
