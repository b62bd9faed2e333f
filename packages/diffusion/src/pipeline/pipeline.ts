/**
 * Text-to-radiograph generation: the library API the CLI, the HTTP server and the study call.
 *
 *   const pipeline = await createPipeline("models/phantom-diffusion");
 *   const { images } = await pipeline.generate({ prompt: { sex: "female", age: 70, findings: ["Cardiomegaly"] }, n: 4 });
 *
 * Batched on the GPU: each chunk of up to `maxBatch` images runs the UNet once per step on the doubled
 * batch [unconditional; conditional] (classifier-free guidance in one call, diffusers' order; the
 * unconditional rows read the negative prompt, "" by default), or on the tripled batch [empty;
 * negative; conditional] when the negative prompt has its own scale (`negativeGuidance`), then the
 * sampler step. Reproducible: the initial noise of image i is the Philox stream of `seed` at offset
 * i * C * H * W, so with a deterministic sampler (DDIM, PNDM, DPM-Solver++) image i depends only on
 * (model, prompt, negative prompt, seed, i, sampler, steps, guidance): bit for bit with the same maxBatch and adapter,
 * to f32 rounding (~1e-7) with another batch size (batched kernels sum in another order). DDPM's
 * per-step noise also depends on the chunk layout, which is fixed by n and maxBatch.
 */
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { encodeGrayPng } from "@cxr/data";
import { defaultGpu, Generator, type Gpu, noGrad, randomNormal, tidy } from "@cxr/kernels";
import { CheckpointError, DiffusionModel, MODEL_FILES, PRECISIONS, type Precision } from "../model/model.ts";
import { negativePromptsPerEntry, type PromptFields, promptFromFields } from "../model/prompt.ts";
import { schedulerConfigOf } from "../schedule/of-config.ts";
import {
  createSampler,
  SAMPLER_KINDS,
  type SamplerKind,
  TIMESTEP_SPACINGS,
  type TimestepSpacing,
} from "../schedule/samplers.ts";
import { denoisingStep, guidanceRows, guidanceTexts } from "./denoise.ts";
import { type GenerationMemory, weightBytes } from "./memory.ts";

export const GENERATE_LIMITS = { maxImages: 10_000, maxSteps: 1000, maxGuidance: 30 } as const;

export interface GenerateOptions {
  /** A prompt, demographics and findings (written as a RoentGen-v2 prompt), or one per image. */
  prompt: string | PromptFields | readonly (string | PromptFields)[];
  /** Images per prompt (default 1; with a list of prompts, images per list entry). */
  n: number;
  steps: number;
  /** Classifier-free guidance scale (1: conditional only; 0: unconditional). */
  guidance: number;
  /**
   * What the guidance steers away from (diffusers' `negative_prompt`): the text of the
   * unconditional rows, "" (default) for the empty prompt the model was trained to read as "no
   * condition". One text for every image, or one per prompt entry (a list as long as the prompt
   * list). Unused when guidance and negativeGuidance are both 1. E.g. "No acute cardiopulmonary abnormality." pushes each
   * image away from a normal film; the patient's own demographic sentence guides the impression
   * alone.
   */
  negativePrompt: string | readonly string[];
  /**
   * The negative prompt's own guidance scale over the empty prompt (default 1): eps_0 + negativeGuidance
   * (eps_n - eps_0) + guidance (eps_c - eps_n), three UNet rows per image (`twoScaleGuidanceBatched`).
   * 1 is the negative prompt as diffusers uses it (two rows). With the negative prompt "{patient}"
   * written out (the patient's demographic sentence), negativeGuidance scales the demographics and
   * guidance the impression; equal, they are plain guidance of the whole prompt.
   */
  negativeGuidance: number;
  /**
   * Guidance rescale phi in [0, 1] (diffusers' `guidance_rescale`; default 0: off): each guided
   * prediction scaled toward the conditional one's standard deviation (`guidanceRescale`).
   */
  guidanceRescale: number;
  sampler: SamplerKind;
  /**
   * How the inference timesteps are spread over the training ones (diffusers' `timestep_spacing`):
   * "leading" (default, SD 2.1's: 10 steps start at t = 901), "trailing" (start at the last training
   * timestep, 999, the closest to the pure noise sampling starts from), or "linspace".
   */
  spacing: TimestepSpacing;
  seed: number;
  bits: 8 | 16;
  /** DDIM's eta (default 0). */
  eta: number;
  /** Images per UNet batch (the guided batch is twice this, three times with negativeGuidance). */
  maxBatch: number;
  /**
   * Called once per distinct prompt that the tokenizer had to change: longer than the text
   * encoder's context (truncated, as CLIP's tokenizer does) or holding words outside the vocabulary
   * (read as [unk]). The same messages are in the result's `warnings`.
   */
  onWarning?: (message: string) => void;
  /** Called after each denoising step of each chunk. */
  onStep?: (progress: { step: number; steps: number; chunk: number; chunks: number }) => void;
}

export const GENERATE_DEFAULTS: Omit<GenerateOptions, "prompt"> = {
  n: 1,
  steps: 50,
  guidance: 3,
  negativePrompt: "",
  negativeGuidance: 1,
  guidanceRescale: 0,
  sampler: "pndm",
  spacing: "leading",
  seed: 1,
  bits: 8,
  eta: 0,
  maxBatch: 16,
};

export interface GeneratedImage {
  prompt: string;
  /** Position in the request (noise offset index). */
  index: number;
  size: number;
  /** Row-major intensities in [0, 1] (the model's [-1, 1] output mapped and clamped). */
  pixels: Float32Array;
  png: Buffer;
  /** Everything needed to reproduce the image (the JSON sidecar). */
  metadata: GenerationMetadata;
}

export interface GenerationMetadata {
  prompt: string;
  index: number;
  seed: number;
  sampler: SamplerKind;
  spacing: TimestepSpacing;
  steps: number;
  guidance: number;
  /** The unconditional rows' text ("": the empty prompt; recorded also when no unconditional rows ran). */
  negativePrompt: string;
  /** The negative prompt's own scale (1: none, two rows). */
  negativeGuidance: number;
  guidanceRescale: number;
  eta: number;
  bits: 8 | 16;
  n: number;
  maxBatch: number;
  size: number;
  model: { name: string; dir: string | null; weightsSha256: string | null };
  /** The text encoder's and UNet's precision: "f32", or "f16" (weights and activations in f16, f32 arithmetic). */
  precision: Precision;
  noise: string;
  scheduler: ReturnType<typeof schedulerConfigOf>;
  /** How the prompt was tokenized: what the text encoder saw of it. */
  tokens: PromptTokens;
}

export interface PromptTokens {
  /** Tokens including start and end, before padding. */
  length: number;
  /** The text encoder's context (maximum length). */
  context: number;
  /** Words cut off because the prompt was longer than the context (empty when it fit). */
  dropped: string[];
  /** Words outside the vocabulary, read as [unk]. */
  unknown: string[];
}

export interface GenerationResult {
  images: GeneratedImage[];
  seconds: number;
  imagesPerSecond: number;
  /**
   * GPU memory from the buffer pool (tensors; kernels' private scratch textures not included): in
   * use when generation started (the weights), the peak over the whole generation (text encoder and
   * every UNet step of every chunk), and each component's weight bytes.
   */
  memory: GenerationMemory;
  /** One message per distinct prompt that was truncated or had unknown words (see onWarning). */
  warnings: string[];
}

/** The warnings for one prompt's tokenization (none when it fit and every word was known). */
export function promptTokenWarnings(prompt: string, tokens: PromptTokens): string[] {
  const warnings: string[] = [];
  const shorten = (text: string) => (text.length > 80 ? `${text.slice(0, 77)}...` : text);
  const shown = shorten(prompt);
  if (tokens.dropped.length > 0) {
    warnings.push(
      `prompt "${shown}" is longer than the text encoder's context of ${tokens.context} tokens: truncated, ` +
        `${tokens.dropped.length} words dropped ("${shorten(tokens.dropped.join(" "))}")`,
    );
  }
  if (tokens.unknown.length > 0) {
    const distinct = [...new Set(tokens.unknown)];
    warnings.push(
      `prompt "${shown}": ${distinct.length} words not in the model's vocabulary, read as [unk]: ` +
        distinct.map((word) => `"${word}"`).join(", "),
    );
  }
  return warnings;
}

export class GenerateOptionsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "GenerateOptionsError";
  }
}

function checkGenerateOptions(options: GenerateOptions): string[] {
  const problems: string[] = [];
  const integer = (value: unknown, name: string, min: number, max: number) => {
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value < min || value > max) {
      problems.push(`${name} must be an integer in [${min}, ${max}], got ${JSON.stringify(value)}`);
    }
  };
  integer(options.n, "n", 1, GENERATE_LIMITS.maxImages);
  integer(options.steps, "steps", 1, GENERATE_LIMITS.maxSteps);
  integer(options.seed, "seed", 0, Number.MAX_SAFE_INTEGER);
  integer(options.maxBatch, "maxBatch", 1, 1024);
  if (!(SAMPLER_KINDS as readonly string[]).includes(options.sampler)) {
    problems.push(`unknown sampler ${JSON.stringify(options.sampler)} (${SAMPLER_KINDS.join(", ")})`);
  }
  if (
    typeof options.guidance !== "number" ||
    !(options.guidance >= 0 && options.guidance <= GENERATE_LIMITS.maxGuidance)
  ) {
    problems.push(
      `guidance must be a number in [0, ${GENERATE_LIMITS.maxGuidance}], got ${JSON.stringify(options.guidance)}`,
    );
  }
  if (
    !(
      typeof options.guidanceRescale === "number" &&
      options.guidanceRescale >= 0 &&
      options.guidanceRescale <= 1
    )
  ) {
    problems.push(
      `guidance rescale must be a number in [0, 1], got ${JSON.stringify(options.guidanceRescale)}`,
    );
  }
  if (!(TIMESTEP_SPACINGS as readonly string[]).includes(options.spacing)) {
    problems.push(
      `unknown timestep spacing ${JSON.stringify(options.spacing)} (${TIMESTEP_SPACINGS.join(", ")})`,
    );
  }
  if (options.bits !== 8 && options.bits !== 16)
    problems.push(`bits must be 8 or 16, got ${JSON.stringify(options.bits)}`);
  if (!(options.eta >= 0 && options.eta <= 1)) problems.push(`eta must be in [0, 1], got ${options.eta}`);
  if (
    typeof options.negativeGuidance !== "number" ||
    !(options.negativeGuidance >= 0 && options.negativeGuidance <= GENERATE_LIMITS.maxGuidance)
  ) {
    problems.push(
      `negative guidance must be a number in [0, ${GENERATE_LIMITS.maxGuidance}], got ${JSON.stringify(options.negativeGuidance)}`,
    );
  }
  const negative = options.negativePrompt;
  if (Array.isArray(negative)) {
    const bad = (negative as readonly unknown[]).findIndex((text) => typeof text !== "string");
    if (bad >= 0) problems.push(`negative prompt ${bad} must be text, got ${JSON.stringify(negative[bad])}`);
  } else if (typeof negative !== "string") {
    problems.push(`negative prompt must be text or a list of texts, got ${JSON.stringify(negative)}`);
  }
  return problems;
}

/**
 * The negative prompt of each requested image: one text for all, or one per prompt entry (each
 * repeated n times, as `expandPrompts` repeats the prompts).
 */
function expandNegativePrompts(
  negative: GenerateOptions["negativePrompt"],
  prompt: GenerateOptions["prompt"],
  n: number,
): string[] {
  const entries = Array.isArray(prompt) ? prompt.length : 1;
  const perEntry = negativePromptsPerEntry(negative, entries);
  if (perEntry === null) {
    throw new GenerateOptionsError(
      `generate: ${negative.length} negative prompts for ${entries} prompt${entries === 1 ? "" : "s"} (give one text, or one per prompt)`,
    );
  }
  return perEntry.flatMap((text) => new Array<string>(n).fill(text));
}

/** Prompt text of each requested image. */
function expandPrompts(prompt: GenerateOptions["prompt"], n: number): string[] {
  const entries = Array.isArray(prompt)
    ? (prompt as readonly (string | PromptFields)[])
    : [prompt as string | PromptFields];
  if (entries.length === 0) throw new GenerateOptionsError("generate: the prompt list is empty");
  const texts = entries.map((entry, index) => {
    if (typeof entry === "string") return entry;
    if (typeof entry === "object" && entry !== null) return promptFromFields(entry);
    throw new GenerateOptionsError(`generate: prompt ${index} must be text or {sex, age, race?, findings}`);
  });
  return texts.flatMap((text) => new Array<string>(n).fill(text));
}

/** sha256 over the two weight files of a model directory (identifies the exact weights). */
export function weightsHash(dir: string): string {
  const hash = createHash("sha256");
  for (const file of [MODEL_FILES.textEncoder, MODEL_FILES.unet]) hash.update(readFileSync(join(dir, file)));
  return hash.digest("hex");
}

/** Checks that DIR holds a model, naming each missing file. */
export function checkModelDir(dir: string): void {
  if (!existsSync(dir)) throw new CheckpointError(`model directory ${dir} does not exist`);
  const missing = Object.values(MODEL_FILES).filter((file) => !existsSync(join(dir, file)));
  if (missing.length > 0) {
    throw new CheckpointError(
      `model directory ${dir} is missing ${missing.join(", ")} (expected a folder written by cxr train diffusion: checkpoint/ema, or models/phantom-diffusion)`,
    );
  }
}

export class Pipeline {
  private readonly hash: string | null;

  constructor(
    readonly model: DiffusionModel,
    readonly dir: string | null,
    private readonly owned: boolean,
  ) {
    this.hash = dir ? weightsHash(dir) : null;
    model.train(false);
  }

  get gpu(): Gpu {
    return this.model.gpu;
  }

  /** The text encoder's and the UNet's precision (createPipeline's `precision`). */
  get precision(): Precision {
    return this.model.unet.precision;
  }

  /**
   * The options `generate` fills in: GENERATE_DEFAULTS, with the model's own sampler and steps when
   * its config.json names them (`sampling`).
   */
  get defaults(): Omit<GenerateOptions, "prompt"> {
    const { sampling } = this.model.config;
    return sampling
      ? { ...GENERATE_DEFAULTS, sampler: sampling.sampler, steps: sampling.steps }
      : { ...GENERATE_DEFAULTS };
  }

  async generate(
    input: Partial<GenerateOptions> & Pick<GenerateOptions, "prompt">,
  ): Promise<GenerationResult> {
    const options: GenerateOptions = { ...this.defaults, ...input };
    const problems = checkGenerateOptions(options);
    if (problems.length > 0) throw new GenerateOptionsError(`generate: ${problems.join("; ")}`);
    const prompts = expandPrompts(options.prompt, options.n);
    const negatives = expandNegativePrompts(options.negativePrompt, options.prompt, options.n);
    if (prompts.length > GENERATE_LIMITS.maxImages) {
      throw new GenerateOptionsError(
        `generate: ${prompts.length} images requested, at most ${GENERATE_LIMITS.maxImages}`,
      );
    }
    const { config } = this.model;
    const size = config.resolution;
    const channels = config.unet.inChannels;
    const perImage = channels * size * size;
    const scheduler = { ...schedulerConfigOf(config), timestepSpacing: options.spacing };
    const started = performance.now();
    this.gpu.pool.resetPeak();
    const startBytes = this.gpu.pool.snapshot().inUseBytes;
    const images: GeneratedImage[] = [];
    const warnings: string[] = [];
    const warned = new Set<string>();
    const chunks = Math.ceil(prompts.length / options.maxBatch);
    const parts = guidanceRows(options.guidance, options.negativeGuidance);
    for (let chunk = 0; chunk < chunks; chunk++) {
      const first = chunk * options.maxBatch;
      const chunkPrompts = prompts.slice(first, first + options.maxBatch);
      const chunkNegatives = negatives.slice(first, first + options.maxBatch);
      const batch = chunkPrompts.length;
      const generator = new Generator(this.gpu, options.seed + 1 + chunk);
      const sampler = createSampler({
        kind: options.sampler,
        inferenceSteps: options.steps,
        config: scheduler,
        eta: options.eta,
        generator,
      });
      // tidy: the text encoder's intermediate activations go back to the pool (only the hidden
      // states and ids are kept); without it every generation left them in use.
      const encoded = noGrad(() =>
        tidy(() =>
          this.model.encodePrompts(guidanceTexts(parts, chunkNegatives, chunkPrompts), { warn: () => {} }),
        ),
      );
      encoded.ids.release();
      // The conditional rows come last; the negative ones just before them.
      const offset = (parts - 1) * batch;
      const negativeOffset = (parts - 2) * batch;
      const tokensAt = (row: number): PromptTokens => ({
        length: encoded.tokens.lengths[row],
        context: this.model.tokenizer.maxLength,
        dropped: encoded.tokens.dropped[row],
        unknown: encoded.tokens.unknownWords[row],
      });
      const tokensOf = (row: number): PromptTokens => tokensAt(offset + row);
      const warn = (key: string, messages: string[]) => {
        if (warned.has(key)) return;
        warned.add(key);
        for (const message of messages) {
          warnings.push(message);
          options.onWarning?.(message);
        }
      };
      for (const [row, prompt] of chunkPrompts.entries()) {
        warn(`prompt\u0000${prompt}`, promptTokenWarnings(prompt, tokensOf(row)));
        if (parts > 1 && chunkNegatives[row] !== "") {
          const negative = chunkNegatives[row];
          warn(
            `negative\u0000${negative}`,
            promptTokenWarnings(negative, tokensAt(negativeOffset + row)).map(
              (message) => `negative ${message}`,
            ),
          );
        }
      }
      let latents = randomNormal(this.gpu, [batch, channels, size, size], options.seed, first * perImage);
      const total = sampler.timesteps.length;
      let values: Float32Array;
      // onStep may throw (a service cancelling at the next step): the latents, the text states and
      // the sampler's history go back to the pool on every way out.
      try {
        for (const [index, t] of sampler.timesteps.entries()) {
          latents = denoisingStep(
            this.model.unet,
            sampler,
            latents,
            t,
            encoded.hiddenStates,
            options.guidance,
            options.guidanceRescale,
            options.negativeGuidance,
          );
          // A step boundary for the kernels runtime: every few steps it drains the queue and collects
          // garbage (its workaround for a crash inside Dawn in long runs, Gpu.endStep).
          await this.gpu.endStep();
          // Let the event loop turn once per step (timers, I/O): a service's lock renewals and
          // requests would otherwise wait for the whole image (endStep mostly resolves as a microtask).
          await new Promise<void>((resolve) => setImmediate(resolve));
          options.onStep?.({ step: index + 1, steps: total, chunk, chunks });
        }
        values = await latents.download();
      } finally {
        sampler.reset();
        encoded.hiddenStates.release();
        latents.release();
      }
      for (let row = 0; row < batch; row++) {
        const pixels = new Float32Array(size * size);
        for (let p = 0; p < size * size; p++) {
          pixels[p] = Math.min(1, Math.max(0, (values[row * perImage + p] + 1) / 2));
        }
        const png = await encodeGrayPng({ width: size, height: size, pixels }, options.bits);
        const index = first + row;
        images.push({
          prompt: chunkPrompts[row],
          index,
          size,
          pixels,
          png,
          metadata: {
            prompt: chunkPrompts[row],
            index,
            seed: options.seed,
            sampler: options.sampler,
            spacing: options.spacing,
            steps: options.steps,
            guidance: options.guidance,
            negativePrompt: chunkNegatives[row],
            negativeGuidance: options.negativeGuidance,
            guidanceRescale: options.guidanceRescale,
            eta: options.eta,
            bits: options.bits,
            n: options.n,
            maxBatch: options.maxBatch,
            size,
            model: { name: config.name, dir: this.dir, weightsSha256: this.hash },
            precision: this.precision,
            noise: `Philox4x32-10 normal, seed ${options.seed}, offset ${index * perImage}, ${perImage} values (image ${index})`,
            scheduler,
            tokens: tokensOf(row),
          },
        });
      }
    }
    const seconds = (performance.now() - started) / 1000;
    const memory: GenerationMemory = {
      startBytes,
      peakBytes: this.gpu.pool.snapshot().peakInUseBytes,
      weights: { textEncoder: weightBytes(this.model.textEncoder), unet: weightBytes(this.model.unet) },
    };
    return { images, seconds, imagesPerSecond: images.length / seconds, memory, warnings };
  }

  dispose(): void {
    if (this.owned) this.model.dispose();
  }
}

/**
 * A pipeline from a model directory (checked file by file) or an already loaded model. `precision`
 * "f16" builds the text encoder and the UNet with f16 weights and runs them on the f16 kernels
 * (inference only; f32 in and out of each, the guidance and the sampler stay f32); it needs the
 * adapter feature shader-f16 (PrecisionError).
 */
export async function createPipeline(
  model: string | DiffusionModel,
  options: { gpu?: Gpu; precision?: Precision } = {},
): Promise<Pipeline> {
  const precision = options.precision ?? "f32";
  if (!PRECISIONS.includes(precision)) {
    throw new GenerateOptionsError(
      `precision must be ${PRECISIONS.join(" or ")}, got ${JSON.stringify(precision)}`,
    );
  }
  if (typeof model !== "string") {
    if (options.precision && model.unet.precision !== precision) {
      throw new GenerateOptionsError(
        `the model was built in ${model.unet.precision}, not ${precision} (createDiffusionModel's precision)`,
      );
    }
    return new Pipeline(model, null, false);
  }
  const dir = resolve(model);
  checkModelDir(dir);
  const gpu = options.gpu ?? (await defaultGpu());
  return new Pipeline(DiffusionModel.load(gpu, dir, precision), dir, true);
}
