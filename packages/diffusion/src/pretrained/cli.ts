/**
 * `cxr convert` (a torch.save / torchvision state dict to safetensors, through the reference Python
 * where torch is installed) and `cxr model inspect` (validate a diffusers folder and summarise its
 * weights without loading them). Registered by `registerPretrainedCommands(program)`.
 */

import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, renameSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createGpu, defaultGpu, type Gpu } from "@cxr/kernels";
import { type Command, InvalidArgumentError } from "commander";
import { PRECISIONS, type Precision } from "../model/model.ts";
import { negativePromptFor, negativePromptsPerEntry } from "../model/prompt.ts";
import { formatGenerationMemory, type GenerationMemory } from "../pipeline/memory.ts";
import { GUIDANCE_DEFAULTS } from "../schedule/guidance.ts";
import { SAMPLER_KINDS, SAMPLING_DEFAULTS, type SamplerKind } from "../schedule/samplers.ts";
import { CLIP_BPE_FILE, ClipTokenizer, writeClipVocabulary } from "./clip-tokenizer.ts";
import type { ComponentName } from "./configs.ts";
import { PretrainedFolder } from "./folder.ts";
import { generateLatent, rgbPng } from "./latent-pipeline.ts";
import { readSafetensorsHeader, type WeightSource } from "./safetensors-stream.ts";
import { loadPretrainedComponents } from "./wire.ts";

export const REFERENCE_SCRIPT = join(
  dirname(fileURLToPath(import.meta.url)),
  "../../reference/sd_reference.py",
);

/** The Python to run torch with: --python, $CXR_PYTHON, Debian's /usr/bin/python3, then python3. */
export function choosePython(flag?: string): string {
  if (flag) return flag;
  if (process.env.CXR_PYTHON) return process.env.CXR_PYTHON;
  return existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
}

export class ConvertError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConvertError";
  }
}

export interface ConvertOptions {
  python?: string;
  /** keep (default), float32 or float16 for floating-point tensors. */
  dtype?: "keep" | "float32" | "float16";
  /** Prepended to every name after stripping. */
  prefix?: string;
  /** Removed from the start of names that have it (e.g. "module." from DataParallel checkpoints). */
  stripPrefix?: string;
  /** Replace an existing output file. */
  force?: boolean;
}

export interface KeyMapping {
  from: string;
  to?: string;
  dtype?: string;
  shape?: number[];
  /** Set for entries that are not tensors (left out). */
  skipped?: string;
}

/** Checks that `python` runs and has torch; the error says what to install. */
export function checkTorch(python: string): string {
  const probe = spawnSync(python, ["-c", "import torch, sys; print(torch.__version__)"], {
    encoding: "utf8",
  });
  if (probe.error) {
    throw new ConvertError(
      `cannot run ${python} (${probe.error.message}). Conversion needs Python with PyTorch: ` +
        "pass --python PATH or set CXR_PYTHON (Debian/Ubuntu: apt-get install python3-torch; elsewhere: pip install torch).",
    );
  }
  if (probe.status !== 0) {
    const reason = probe.stderr.trim().split("\n").at(-1) ?? "";
    throw new ConvertError(
      `PyTorch is not importable from ${python} (${reason}). Conversion reads pickles with torch.load, so it needs ` +
        "torch: apt-get install python3-torch (Debian/Ubuntu) or pip install torch, or run cxr convert where torch is " +
        "installed and copy the .safetensors file here.",
    );
  }
  return probe.stdout.trim();
}

/** Converts a state dict to safetensors; returns the key mapping (old name -> new name, dtype, shape). */
export function convertStateDict(input: string, output: string, options: ConvertOptions = {}): KeyMapping[] {
  const source = resolve(input);
  if (!existsSync(source) || !statSync(source).isFile()) throw new ConvertError(`${source}: file not found`);
  if (!output.endsWith(".safetensors"))
    throw new ConvertError(`${output}: the output must end in .safetensors`);
  if (existsSync(output) && !options.force) {
    throw new ConvertError(`${output} exists; pass --force to replace it`);
  }
  const python = choosePython(options.python);
  checkTorch(python);
  const args = [REFERENCE_SCRIPT, "convert", source, resolve(output), "--dtype", options.dtype ?? "keep"];
  if (options.prefix) args.push("--prefix", options.prefix);
  if (options.stripPrefix) args.push("--strip-prefix", options.stripPrefix);
  const run = spawnSync(python, args, { encoding: "utf8", maxBuffer: 256 * 1024 * 1024 });
  if (run.status !== 0) {
    throw new ConvertError(run.stderr.trim().split("\n").at(-1) || `${python} exited with ${run.status}`);
  }
  const mapping = run.stdout
    .split("\n")
    .filter((line) => line.trim().length > 0)
    .map((line) => JSON.parse(line) as KeyMapping);
  // Read the result back: a header we cannot parse is a failed conversion.
  const header = readSafetensorsHeader(resolve(output));
  const written = mapping.filter((row) => row.to !== undefined).length;
  if (header.entries.size !== written) {
    throw new ConvertError(
      `${output}: holds ${header.entries.size} tensors, the conversion reported ${written}`,
    );
  }
  return mapping;
}

function formatMapping(mapping: KeyMapping[]): string {
  const lines: string[] = [];
  for (const row of mapping) {
    if (row.skipped) lines.push(`  ${row.from}  (skipped: ${row.skipped}, not a tensor)`);
    else if (row.from === row.to) lines.push(`  ${row.from}  ${row.dtype} [${row.shape?.join(", ")}]`);
    else lines.push(`  ${row.from} -> ${row.to}  ${row.dtype} [${row.shape?.join(", ")}]`);
  }
  return lines.join("\n");
}

function summariseWeights(source: WeightSource): Record<string, unknown> {
  return {
    file: source.path,
    tensors: source.entries.size,
    megabytes: Number((source.byteLength / 2 ** 20).toFixed(1)),
    dtypes: Object.fromEntries(source.dtypes()),
  };
}

/** Validates a diffusers folder (configs, tokenizer, weight headers) and describes it. */
export function inspectFolder(path: string, options: { prompt?: string } = {}): Record<string, unknown> {
  const folder = PretrainedFolder.open(path, { require: [] });
  const present = (name: ComponentName) =>
    folder.index[name] !== undefined && existsSync(join(folder.root, name));
  const report: Record<string, unknown> = { folder: folder.root, pipeline: folder.index._class_name };
  if (present("unet")) {
    const unet = folder.unetConfig();
    const weights = folder.weights("unet");
    report.unet = {
      blockOutChannels: unet.block_out_channels,
      attentionHeadDim: unet.attention_head_dim,
      crossAttentionDim: unet.cross_attention_dim,
      useLinearProjection: unet.use_linear_projection,
      upcastAttention: unet.upcast_attention,
      weights: summariseWeights(weights),
    };
    weights.close();
  }
  if (present("vae")) {
    const vae = folder.vaeConfig();
    const weights = folder.weights("vae");
    report.vae = {
      blockOutChannels: vae.block_out_channels,
      latentChannels: vae.latent_channels,
      scalingFactor: vae.scaling_factor,
      weights: summariseWeights(weights),
    };
    weights.close();
  }
  if (present("text_encoder")) {
    const text = folder.textEncoderConfig();
    const weights = folder.weights("text_encoder");
    report.textEncoder = {
      layers: text.num_hidden_layers,
      hidden: text.hidden_size,
      heads: text.num_attention_heads,
      activation: text.hidden_act,
      weights: summariseWeights(weights),
    };
    weights.close();
  }
  if (present("scheduler")) {
    const scheduler = folder.schedulerConfig();
    report.scheduler = {
      class: scheduler._class_name,
      betaSchedule: scheduler.beta_schedule,
      betas: [scheduler.beta_start, scheduler.beta_end],
      predictionType: scheduler.prediction_type,
      timestepSpacing: scheduler.timestep_spacing,
      stepsOffset: scheduler.steps_offset,
      setAlphaToOne: scheduler.set_alpha_to_one,
    };
  }
  if (present("tokenizer")) {
    const tokenizer = ClipTokenizer.fromFiles(folder.tokenizerFiles());
    report.tokenizer = {
      vocabulary: tokenizer.vocab.size,
      maxLength: tokenizer.options.maxLength,
      padToken: tokenizer.options.padToken,
      ...(options.prompt ? { ids: tokenizer.encode(options.prompt, { padding: false }).ids } : {}),
    };
  }
  return report;
}

function writeAtomic(path: string, data: string | Buffer): void {
  const temporary = `${path}.tmp-${process.pid}`;
  writeFileSync(temporary, data);
  renameSync(temporary, path);
}

const number = (minimum: number, integer: boolean) => (value: string) => {
  const parsed = Number(value);
  if (!Number.isFinite(parsed) || parsed < minimum || (integer && !Number.isInteger(parsed))) {
    throw new InvalidArgumentError(
      `expected ${integer ? "an integer" : "a number"} >= ${minimum}, got "${value}"`,
    );
  }
  return parsed;
};

/** Images per UNet batch for a diffusers folder (the guided batch is twice this). */
export const FOLDER_BATCH_DEFAULT = 4;

/** Options of a generation from a diffusers folder (`cxr generate --model FOLDER`). */
export interface FolderGenerateOptions {
  /** One or more prompts; `n` images of each. */
  prompts: readonly string[];
  /** Output folder for image-NNNN.png + image-NNNN.json. */
  out: string;
  /** Images per prompt (default 1). */
  n?: number;
  /** Inference steps (default 75, RoentGen-v2's). */
  steps?: number;
  /** Guidance scale (default 3, RoentGen-v2's). */
  guidance?: number;
  /** Guidance rescale phi in [0, 1] (default 0: off). */
  guidanceRescale?: number;
  /** What guidance steers away from (diffusers' negative_prompt): one text, or one per prompt; default "". */
  negativePrompt?: string | readonly string[];
  /** Default: the folder's scheduler class. */
  sampler?: SamplerKind;
  seed?: number;
  /** PNG bit depth of the RGB images (default 8). */
  bits?: 8 | 16;
  /** Images per UNet batch (the guided batch is twice this; default 4). */
  batch?: number;
  /** Weight variant, e.g. "fp16" for *.fp16.safetensors. */
  variant?: string;
  /** "f16": the text encoder, the UNet and the VAE in f16 (needs shader-f16; f32 arithmetic inside). */
  precision?: Precision;
  backend?: string;
  adapter?: string;
  onStep?: (progress: { step: number; steps: number; chunk: number; chunks: number }) => void;
  onWarning?: (message: string) => void;
}

export interface FolderGenerateResult {
  /** PNG paths, in request order. */
  files: string[];
  /** Prompt of each image. */
  prompts: string[];
  seconds: number;
  loadSeconds: number;
  /** Buffer pool bytes: at the start of the first batch (the weights), the peak over all batches, per component. */
  memory: GenerationMemory;
  sampler: SamplerKind;
  steps: number;
  guidance: number;
  precision: Precision;
}

/** True when DIR is a diffusers folder (has model_index.json) rather than our own model folder. */
export function isDiffusersFolder(dir: string): boolean {
  return existsSync(join(dir, "model_index.json"));
}

/**
 * Text-to-image with a diffusers Stable Diffusion 2.x / RoentGen-v2 folder: loads it strictly, then
 * runs `generateLatent` in batches of `batch` images (image i's initial latents are the Philox stream
 * of `seed` at offset i * 4 * h * w, independent of the batching) and writes one RGB PNG and one JSON
 * sidecar per image, atomically. Defaults are RoentGen-v2's: 75 steps, guidance 3, the folder's
 * scheduler (PNDM), the folder's resolution (512 px for SD 2.1-base).
 */
export async function generateFromFolder(
  folder: string,
  options: FolderGenerateOptions,
  device?: Gpu,
): Promise<FolderGenerateResult> {
  const n = options.n ?? 1;
  const steps = options.steps ?? SAMPLING_DEFAULTS.inferenceSteps;
  const guidance = options.guidance ?? GUIDANCE_DEFAULTS.scale;
  const guidanceRescale = options.guidanceRescale ?? 0;
  const seed = options.seed ?? 0;
  const bits = options.bits ?? 8;
  const batch = options.batch ?? FOLDER_BATCH_DEFAULT;
  const problems: string[] = [];
  const integer = (value: number, name: string, min: number, max: number) => {
    if (!Number.isSafeInteger(value) || value < min || value > max)
      problems.push(`${name} must be an integer in [${min}, ${max}], got ${value}`);
  };
  integer(n, "n", 1, 10_000);
  integer(steps, "steps", 1, 1000);
  integer(seed, "seed", 0, Number.MAX_SAFE_INTEGER);
  integer(batch, "batch", 1, 1024);
  if (!(guidance >= 0 && guidance <= 30)) problems.push(`guidance must be in [0, 30], got ${guidance}`);
  if (!(guidanceRescale >= 0 && guidanceRescale <= 1))
    problems.push(`guidance rescale must be in [0, 1], got ${guidanceRescale}`);
  if (bits !== 8 && bits !== 16) problems.push(`bits must be 8 or 16, got ${bits}`);
  if (options.sampler !== undefined && !(SAMPLER_KINDS as readonly string[]).includes(options.sampler))
    problems.push(`sampler must be one of ${SAMPLER_KINDS.join(", ")}, got "${options.sampler}"`);
  const precision = options.precision ?? "f32";
  if (!PRECISIONS.includes(precision)) problems.push(`precision must be f32 or f16, got "${precision}"`);
  if (options.prompts.length === 0) problems.push("no prompt given");
  options.prompts.forEach((prompt, index) => {
    if (typeof prompt !== "string" || prompt.trim() === "") problems.push(`prompt ${index} is empty`);
  });
  const negative = options.negativePrompt ?? "";
  const negativeTexts = negativePromptsPerEntry(negative, options.prompts.length) ?? [];
  if (negativeTexts.length !== options.prompts.length) {
    problems.push(
      `negative prompt must be one text or one per prompt (${options.prompts.length}), got ${JSON.stringify(negative)}`,
    );
  }
  if (problems.length > 0) throw new InvalidArgumentError(`generate ${folder}: ${problems.join("; ")}`);
  const requests = options.prompts.flatMap((prompt) => new Array<string>(n).fill(prompt));
  const requestNegatives = negativeTexts.flatMap((text) => new Array<string>(n).fill(text));
  if (requests.length > 10_000)
    throw new InvalidArgumentError(`generate: ${requests.length} images requested, at most 10000`);
  const gpu =
    device ??
    (options.backend || options.adapter
      ? await createGpu({ backend: options.backend, adapterName: options.adapter })
      : await defaultGpu());
  const loadStarted = performance.now();
  const components = loadPretrainedComponents(gpu, folder, { variant: options.variant, precision });
  const loadSeconds = (performance.now() - loadStarted) / 1000;
  const sampler = options.sampler ?? components.scheduler.kind;
  const started = performance.now();
  const files: string[] = [];
  const chunkMemory: GenerationMemory[] = [];
  try {
    mkdirSync(options.out, { recursive: true });
    const chunks = Math.ceil(requests.length / batch);
    const width = Math.max(4, String(requests.length - 1).length);
    for (let chunk = 0; chunk < chunks; chunk++) {
      const first = chunk * batch;
      const prompts = requests.slice(first, first + batch);
      const negativePrompts = requestNegatives.slice(first, first + batch);
      const result = await generateLatent(components, {
        prompts,
        negativePrompts,
        steps,
        guidance,
        guidanceRescale,
        sampler,
        seed,
        firstIndex: first,
        onStep: (step, total) => options.onStep?.({ step, steps: total, chunk, chunks }),
        onWarning: options.onWarning,
      });
      chunkMemory.push(result.memory);
      const [, channels, side] = result.latentShape;
      for (const [row, prompt] of prompts.entries()) {
        const index = first + row;
        const stem = join(options.out, `image-${String(index).padStart(width, "0")}`);
        writeAtomic(`${stem}.png`, await rgbPng(result.images, result.imageShape, row, bits));
        const perImage = channels * side * side;
        const sidecar = {
          prompt,
          index,
          model: { dir: resolve(folder), kind: "diffusers", variant: options.variant ?? null },
          seed,
          sampler,
          steps,
          timesteps: result.timesteps,
          guidance,
          negativePrompt: negativePrompts[row],
          guidanceRescale,
          bits,
          n,
          batch,
          size: result.imageShape[2],
          noise: `Philox4x32-10 normal, seed ${seed}, offset ${index * perImage}, ${perImage} values (latents of image ${index})`,
          precision: { unet: precision, textEncoder: precision, vae: precision },
          scheduler: components.scheduler.config,
        };
        writeAtomic(`${stem}.json`, `${JSON.stringify(sidecar, null, 2)}\n`);
        files.push(`${stem}.png`);
      }
    }
  } finally {
    components.textEncoder.dispose();
    components.unet.dispose();
    components.vae.dispose();
  }
  return {
    files,
    prompts: requests,
    seconds: (performance.now() - started) / 1000,
    loadSeconds,
    // The first chunk's start (the weights), the peak over all chunks (n >= 1: at least one ran).
    memory: { ...chunkMemory[0], peakBytes: Math.max(...chunkMemory.map((memory) => memory.peakBytes)) },
    sampler,
    steps,
    guidance,
    precision,
  };
}

/** The summary lines `cxr generate` prints for a diffusers folder. */
export function formatFolderGenerate(result: FolderGenerateResult): string {
  return (
    `${result.files.length} images (${result.sampler}, ${result.steps} steps, guidance ${result.guidance}) in ${result.seconds.toFixed(1)} s ` +
    `(weights loaded in ${result.loadSeconds.toFixed(1)} s); ${formatGenerationMemory(result.memory, result.precision)}\n` +
    `${result.files.map((path) => `  ${path}`).join("\n")}\n`
  );
}

export interface ModelGenerateFlags {
  prompt: string[];
  out: string;
  n?: number;
  steps?: number;
  guidance?: number;
  guidanceRescale?: number;
  negativePrompt?: string;
  sampler?: string;
  seed: number;
  bits?: string;
  batch?: number;
  variant?: string;
  precision?: string;
  backend?: string;
  adapter?: string;
}

/** `cxr model generate FOLDER` (alias of `cxr generate --model FOLDER`); returns the PNG paths. */
export async function modelGenerate(
  folder: string,
  flags: ModelGenerateFlags,
  device?: Gpu,
): Promise<string[]> {
  const result = await generateFromFolder(
    folder,
    {
      prompts: flags.prompt,
      negativePrompt: flags.prompt.map((prompt) => negativePromptFor(flags.negativePrompt ?? "", prompt)),
      out: flags.out,
      n: flags.n,
      steps: flags.steps,
      guidance: flags.guidance,
      guidanceRescale: flags.guidanceRescale,
      sampler: flags.sampler as SamplerKind | undefined,
      seed: flags.seed,
      bits: flags.bits === undefined ? undefined : (Number(flags.bits) as 8 | 16),
      batch: flags.batch,
      variant: flags.variant,
      precision: flags.precision as Precision | undefined,
      backend: flags.backend,
      adapter: flags.adapter,
      onStep: ({ step, steps }) => process.stderr.write(`\rstep ${step}/${steps}`),
      onWarning: (message) => process.stderr.write(`\nwarning: ${message}\n`),
    },
    device,
  );
  process.stderr.write("\n");
  process.stdout.write(formatFolderGenerate(result));
  return result.files;
}

/** openai/CLIP's BPE file at a pinned commit, and its SHA-256 (MIT licence, as the repository says). */
export const CLIP_BPE_URL =
  "https://raw.githubusercontent.com/openai/CLIP/d05afc436d78f1c48dc0dbf8e5980a9d471f35f6/clip/bpe_simple_vocab_16e6.txt.gz";
export const CLIP_BPE_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a";

/** Downloads CLIP's BPE file into `dir` (atomically, after checking its SHA-256) and returns its path. */
export async function downloadClipBpe(dir: string, url = CLIP_BPE_URL): Promise<string> {
  let bytes: Buffer;
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(120_000) });
    if (!response.ok) throw new Error(`HTTP ${response.status} ${response.statusText}`);
    bytes = Buffer.from(await response.arrayBuffer());
  } catch (error) {
    throw new ConvertError(`cannot download ${url}: ${(error as Error).message}`);
  }
  const digest = createHash("sha256").update(bytes).digest("hex");
  if (digest !== CLIP_BPE_SHA256)
    throw new ConvertError(
      `${url}: SHA-256 ${digest} is not the pinned ${CLIP_BPE_SHA256}; nothing was written`,
    );
  mkdirSync(dir, { recursive: true });
  const path = join(dir, CLIP_BPE_FILE);
  writeFileSync(`${path}.tmp-${process.pid}`, bytes);
  renameSync(`${path}.tmp-${process.pid}`, path);
  return path;
}

export function registerPretrainedCommands(program: Command): void {
  program
    .command("convert")
    .description(
      "convert a torch.save / torchvision state dict (.pt, .pth, .bin, .ckpt) to safetensors, printing the key mapping (needs Python with torch)",
    )
    .argument("<input>", "the pickled state dict")
    .argument("<output>", "the .safetensors file to write (atomically)")
    .option("--dtype <dtype>", "keep | float32 | float16 for floating-point tensors", "keep")
    .option("--prefix <prefix>", "prepend to every tensor name")
    .option("--strip-prefix <prefix>", "remove from names that start with it (e.g. module.)")
    .option("--python <path>", "the Python with torch (default: $CXR_PYTHON, /usr/bin/python3, python3)")
    .option("--force", "replace an existing output file")
    .option("--json", "print the mapping as JSON")
    .action((input: string, output: string, flags: ConvertOptions & { json?: boolean }) => {
      if (!["keep", "float32", "float16"].includes(flags.dtype ?? "keep")) {
        throw new ConvertError(`--dtype must be keep, float32 or float16, got "${flags.dtype}"`);
      }
      const mapping = convertStateDict(input, output, flags);
      if (flags.json) {
        process.stdout.write(`${JSON.stringify(mapping, null, 2)}\n`);
        return;
      }
      const renamed = mapping.filter((row) => row.to !== undefined && row.to !== row.from).length;
      const tensors = mapping.filter((row) => row.to !== undefined).length;
      process.stdout.write(
        `${input} -> ${output}: ${tensors} tensors (${renamed} renamed)\n${formatMapping(mapping)}\n`,
      );
    });

  const model = program.command("model").description("published model folders (diffusers layout)");
  model
    .command("inspect")
    .description(
      "validate a diffusers folder (model_index.json, configs, tokenizer, weight headers) and print a JSON summary",
    )
    .argument("<folder>", "e.g. path/to/roentgen-v2 or stable-diffusion-2-1-base")
    .option("--prompt <text>", "also tokenize this prompt with the folder's tokenizer")
    .action((folder: string, flags: { prompt?: string }) => {
      process.stdout.write(`${JSON.stringify(inspectFolder(folder, flags), null, 2)}\n`);
    });
  model
    .command("clip-vocab")
    .description(
      `write vocab.json + merges.txt (transformers' CLIPTokenizer layout) from OpenAI CLIP's own ${CLIP_BPE_FILE}`,
    )
    .argument("[bpe]", `OpenAI's BPE file (openai/CLIP clip/${CLIP_BPE_FILE}, gzip or plain text)`)
    .option("--out <dir>", "the folder to write vocab.json and merges.txt into (atomically)", "clip-vocab")
    .option(
      "--download",
      `fetch ${CLIP_BPE_FILE} from openai/CLIP at a pinned commit (checked by SHA-256) instead of naming a file`,
    )
    .action(async (bpe: string | undefined, flags: { out: string; download?: boolean }) => {
      if ((bpe === undefined) === !flags.download)
        throw new InvalidArgumentError("give either the BPE file or --download (not both)");
      const source = bpe ?? (await downloadClipBpe(flags.out));
      const written = writeClipVocabulary(source, flags.out);
      process.stdout.write(
        `${written.vocabPath} (${written.tokens} tokens), ${written.mergesPath} (${written.merges} merges)\n`,
      );
    });
  model
    .command("generate")
    .description(
      "alias of `cxr generate --model FOLDER` for a diffusers Stable Diffusion / RoentGen-v2 folder (RGB PNG + JSON per image)",
    )
    .argument("<folder>", "the diffusers folder")
    .requiredOption("--prompt <text...>", "one or more prompts")
    .option("--out <dir>", "where to write image-NNNN.png and .json", "generated")
    .option("--n <count>", "images per prompt", number(1, true))
    .option("--steps <n>", "inference steps (default 75, RoentGen-v2's)", number(1, true))
    .option("--guidance <scale>", "classifier-free guidance (default 3; 1 = off)", number(0, false))
    .option("--guidance-rescale <phi>", "guidance rescale in [0, 1] (default 0: off)", number(0, false))
    .option(
      "--negative-prompt <text>",
      "what guidance steers away from (diffusers' negative_prompt; default: the empty prompt); {patient} stands for each prompt's demographic sentence",
    )
    .option("--bits <depth>", "PNG bit depth, 8 or 16")
    .option("--batch <count>", `images per UNet batch (default ${FOLDER_BATCH_DEFAULT})`, number(1, true))
    .option("--sampler <kind>", `${SAMPLER_KINDS.join(" | ")} (default: the folder's scheduler)`)
    .option("--seed <n>", "seed of the initial latents", number(0, true), 0)
    .option("--variant <name>", "weight variant, e.g. fp16 for *.fp16.safetensors")
    .option(
      "--precision <p>",
      "f32 | f16: weights and activations of the text encoder, UNet and VAE (f16 needs shader-f16)",
    )
    .option("--backend <name>", "vulkan | metal | d3d12 | opengles")
    .option("--adapter <substring>", "adapter name filter")
    .action(async (folder: string, flags: ModelGenerateFlags) => {
      await modelGenerate(folder, flags);
    });
}
