/**
 * Generation jobs: one image per (job, index) with seed = job seed + index, written atomically as
 * `<images>/<job>/<index>.png` plus its JSON sidecar, then recorded. A job re-run after a crash
 * skips the indices it already recorded, so it produces the same images and never a duplicate.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { Precision } from "./config.ts";
import { writeFileAtomic } from "./paths.ts";
import { type JobContext, JobFailure, type JobOutcome, type JobRunner } from "./queue.ts";

export const SAMPLERS = ["ddpm", "ddim", "pndm", "dpmpp-2m"] as const;
export type SamplerName = (typeof SAMPLERS)[number];
/**
 * A request's sampler and steps when it names none and the model names none either (a model's
 * config.json may: `ModelInfo.defaultSampler`, `defaultSteps`): the diffusion package's
 * GENERATE_DEFAULTS, PNDM for 50 steps.
 */
export const FALLBACK_SAMPLING: Readonly<{ sampler: SamplerName; steps: number }> = {
  sampler: "pndm",
  steps: 50,
};
/** Timestep spacings (the diffusion package's `TIMESTEP_SPACINGS`; a test keeps the two equal). */
export const SPACINGS = ["leading", "trailing", "linspace"] as const;
export type SpacingName = (typeof SPACINGS)[number];

export interface StructuredPrompt {
  sex: "female" | "male";
  age: number;
  race?: string | null;
  findings: string[];
}

/** One image to make, as the generator sees it. */
export interface ImageRequest {
  model: string;
  prompt?: string;
  structured?: StructuredPrompt;
  steps: number;
  guidance: number;
  sampler: SamplerName;
  spacing: SpacingName;
  /** Guidance rescale phi in [0, 1]. */
  guidanceRescale: number;
  /** What guidance steers away from ("" : the empty prompt); `{patient}` is the prompt's demographic sentence. */
  negativePrompt: string;
  /** The negative prompt's own scale over the empty prompt (1: none; else three UNet rows per image). */
  negativeGuidance: number;
  seed: number;
  bitDepth: 8 | 16;
  /** "f16": the model's f16 kernels. */
  precision: Precision;
}

/** The sampling fields that jobs queued before they existed lack. */
export interface SamplingFields {
  spacing: SpacingName;
  guidanceRescale: number;
  negativePrompt: string;
  negativeGuidance: number;
  precision: Precision;
}

/** Their values for a job queued without them: what the server did before they existed. */
export const SAMPLING_FIELD_DEFAULTS: Readonly<SamplingFields> = {
  spacing: "leading",
  guidanceRescale: 0,
  negativePrompt: "",
  negativeGuidance: 1,
  precision: "f32",
};

/**
 * A job's params as stored (generation, batch or shard), with the sampling fields that a job queued
 * before they existed lacks filled in with the behaviour it was queued under: "leading" spacing, no
 * guidance rescale, the empty negative prompt at scale 1, f32. Called once where a runner or the batch bookkeeping reads stored params.
 */
export function withSamplingDefaults<T extends Partial<SamplingFields>>(params: T): T & SamplingFields {
  return {
    ...params,
    spacing: params.spacing ?? SAMPLING_FIELD_DEFAULTS.spacing,
    guidanceRescale: params.guidanceRescale ?? SAMPLING_FIELD_DEFAULTS.guidanceRescale,
    negativePrompt: params.negativePrompt ?? SAMPLING_FIELD_DEFAULTS.negativePrompt,
    negativeGuidance: params.negativeGuidance ?? SAMPLING_FIELD_DEFAULTS.negativeGuidance,
    precision: params.precision ?? SAMPLING_FIELD_DEFAULTS.precision,
  };
}

export interface GeneratedImage {
  png: Uint8Array;
  /** Everything needed to make the same image again (the generator's sidecar). */
  sidecar: Record<string, unknown>;
  width: number;
  height: number;
}

export interface ModelInfo {
  name: string;
  kind: "diffusion" | "classifier";
  /** Native image size in pixels (square). */
  size?: number;
  defaultSteps?: number;
  /** The sampler the model is sampled with when a request names none. */
  defaultSampler?: SamplerName;
  /**
   * Why the model cannot be loaded as it stands (its config.json is not JSON or fails the model's
   * checks); the server refuses requests for it at submission instead of failing their jobs.
   */
  problem?: string;
  details?: Record<string, unknown>;
}

/** What the server needs of a generator: the real one wraps `createPipeline` from @cxr/diffusion. */
export interface ImageGenerator {
  /** Whether a model of that name can be loaded (it exists under the models root). */
  hasModel(name: string): boolean;
  /** What is known of a model without generating (its size, default steps). */
  modelInfo?(name: string): ModelInfo | null;
  /** Makes one image; calls `onStep` after each sampler step (it throws to stop the image). */
  generate(request: ImageRequest, onStep: (step: number, total: number) => void): Promise<GeneratedImage>;
  /** The per-kernel profile of the work since the last call (empty when profiling is off). */
  takeProfile?(): Promise<unknown[]>;
  /** Why a precision cannot run here (f16 without the adapter's shader-f16), or null when it can. */
  precisionProblem?(precision: Precision): Promise<string | null>;
}

export interface GenerationParams {
  model: string;
  prompt?: string;
  structured?: StructuredPrompt;
  n: number;
  steps: number;
  guidance: number;
  sampler: SamplerName;
  /** Absent in jobs queued before the field existed: "leading". */
  spacing?: SpacingName;
  /** Guidance rescale phi in [0, 1] (absent in jobs queued before the field existed: 0). */
  guidanceRescale?: number;
  /** Absent in jobs queued before the field existed: "". */
  negativePrompt?: string;
  /** Absent in jobs queued before the field existed: 1. */
  negativeGuidance?: number;
  seed: number;
  bitDepth: 8 | 16;
  precision?: Precision;
}

/** Runs `generation` jobs. */
export class GenerationRunner implements JobRunner {
  readonly kinds = ["generation"] as const;

  constructor(
    private readonly generator: ImageGenerator,
    private readonly imagesRoot: string,
  ) {}

  async run(ctx: JobContext): Promise<JobOutcome> {
    const params = withSamplingDefaults(ctx.job.params as unknown as GenerationParams);
    if (!this.generator.hasModel(params.model)) {
      throw new JobFailure("unknown_model", `model "${params.model}" is not under the models root`);
    }
    const folder = join(this.imagesRoot, ctx.job.id);
    const files = (index: number) => ({
      path: join(folder, `${index}.png`),
      sidecarPath: join(folder, `${index}.json`),
    });
    const done = new Set(ctx.store.images(ctx.job.id).map((image) => image.index));
    // Images already on disk (PNG and sidecar, both written atomically, the sidecar last): written by
    // an earlier run of this job, here or on another worker sharing the data root. Not made again.
    for (let index = 0; index < params.n; index++) {
      const { path, sidecarPath } = files(index);
      if (!done.has(index) && existsSync(path) && existsSync(sidecarPath)) {
        ctx.store.addImage({
          jobId: ctx.job.id,
          index,
          seed: (params.seed + index) >>> 0,
          path,
          sidecarPath,
        });
        done.add(index);
      }
    }
    const total = params.n * params.steps;
    let completed = done.size * params.steps;
    for (let index = 0; index < params.n; index++) {
      if (done.has(index)) continue;
      const seed = (params.seed + index) >>> 0;
      const image = await this.generator.generate(
        {
          model: params.model,
          prompt: params.prompt,
          structured: params.structured,
          steps: params.steps,
          guidance: params.guidance,
          sampler: params.sampler,
          spacing: params.spacing,
          guidanceRescale: params.guidanceRescale,
          negativePrompt: params.negativePrompt,
          negativeGuidance: params.negativeGuidance,
          seed,
          bitDepth: params.bitDepth,
          precision: params.precision,
        },
        (step) => {
          ctx.progress(completed + step, total);
          ctx.check();
        },
      );
      const { path, sidecarPath } = files(index);
      const sidecar = {
        ...image.sidecar,
        job: ctx.job.id,
        index,
        seed,
        width: image.width,
        height: image.height,
      };
      await ctx.guard();
      await writeFileAtomic(path, image.png);
      await writeFileAtomic(sidecarPath, `${JSON.stringify(sidecar, null, 2)}\n`);
      ctx.store.addImage({ jobId: ctx.job.id, index, seed, path, sidecarPath });
      completed += params.steps;
      // Between images: answer requests, stop on cancel or drain.
      await ctx.step(completed, total);
    }
    const images = ctx.store
      .images(ctx.job.id)
      .map((image) => ({ id: image.id, index: image.index, seed: image.seed }));
    return { result: { images }, profile: await this.generator.takeProfile?.() };
  }
}
