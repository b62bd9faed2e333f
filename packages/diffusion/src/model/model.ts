/**
 * The generator as one bundle: tokenizer + CLIP text encoder + UNet, created from a configuration
 * and a seed, saved to and loaded from a directory laid out like a diffusers pipeline:
 *
 *   DIR/config.json                                 DiffusionModelConfig (+ "format")
 *   DIR/tokenizer.json                              WordTokenizer.toJSON()
 *   DIR/text_encoder/model.safetensors              text_model.* (transformers' CLIPTextModel names)
 *   DIR/unet/diffusion_pytorch_model.safetensors    conv_in.*, down_blocks.* ... (diffusers' names)
 *
 * Every file is written atomically (temporary name, then rename), the configuration last; other files
 * in DIR are left alone. Loading checks every tensor name and shape against the configuration and
 * reports every mismatch at once; a corrupted or truncated file is an error naming the file.
 */
import {
  closeSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import {
  formatShape,
  type Gpu,
  ParameterInit,
  readSafetensors,
  type Tensor,
  type TensorToWrite,
  uploadTokens,
  withParameterDtype,
  writeSafetensors,
} from "@cxr/kernels";
import { checkConfig, type DiffusionModelConfig, withAttentionAt } from "./config.ts";
import { ClipTextModel } from "./text-encoder.ts";
import { type Encoded, type EncodeOptions, WordTokenizer } from "./tokenizer.ts";
import { UNet2DConditionModel } from "./unet.ts";

export const MODEL_FILES = {
  config: "config.json",
  tokenizer: "tokenizer.json",
  textEncoder: "text_encoder/model.safetensors",
  unet: "unet/diffusion_pytorch_model.safetensors",
} as const;

export const MODEL_FORMAT = "cxr-diffusion/1";

export class CheckpointError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CheckpointError";
  }
}

/** Writes text to a temporary file beside `path`, flushes it to disk, then renames it over `path`. */
export function writeFileAtomic(path: string, text: string): void {
  const temporary = `${path}.tmp-${process.pid}`;
  const fd = openSync(temporary, "w");
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } catch (error) {
    closeSync(fd);
    unlinkSync(temporary);
    throw error;
  }
  closeSync(fd);
  renameSync(temporary, path);
}

function readJson(path: string, what: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    throw new CheckpointError(`cannot read the ${what} ${path}: ${(error as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new CheckpointError(`${path} is not valid JSON (${(error as Error).message})`);
  }
}

/**
 * Every difference between the tensors a module needs and those a file holds: missing, unexpected,
 * misshapen. Not truncated: the caller prints them all.
 */
export function stateMismatches(
  expected: Map<string, Tensor>,
  stored: Map<string, { shape: readonly number[] }>,
): string[] {
  const problems: string[] = [];
  for (const [name, tensor] of expected) {
    const entry = stored.get(name);
    if (!entry) problems.push(`missing "${name}" ${formatShape(tensor.shape)}`);
    else if (
      entry.shape.length !== tensor.shape.length ||
      entry.shape.some((dim, index) => dim !== tensor.shape[index])
    ) {
      problems.push(
        `"${name}" is ${formatShape(entry.shape)} in the file, the config needs ${formatShape(tensor.shape)}`,
      );
    }
  }
  for (const [name, entry] of stored) {
    if (!expected.has(name)) problems.push(`unexpected "${name}" ${formatShape(entry.shape)}`);
  }
  return problems;
}

export interface EncodedPrompts {
  /** last_hidden_state [B, maxPositions, hidden]. */
  hiddenStates: Tensor;
  /** u32 [B, maxPositions]. */
  ids: Tensor;
  tokens: Encoded;
}

/**
 * Generation precision: "f16" runs the text encoder, the UNet and (diffusers folders) the VAE on the
 * f16 kernels, inference only (needs the adapter's shader-f16).
 */
export type Precision = "f32" | "f16";
export const PRECISIONS: readonly Precision[] = ["f32", "f16"];

/** --precision f16 on an adapter without shader-f16. */
export class PrecisionError extends Error {
  constructor(gpu: Gpu) {
    const name = gpu.adapter?.description || gpu.adapter?.device || "this adapter";
    super(
      `precision f16 needs the adapter feature 'shader-f16', which ${name} lacks (cxr doctor lists the features); use --precision f32`,
    );
    this.name = "PrecisionError";
  }
}

export class DiffusionModel {
  constructor(
    readonly config: DiffusionModelConfig,
    readonly tokenizer: WordTokenizer,
    readonly textEncoder: ClipTextModel,
    readonly unet: UNet2DConditionModel,
  ) {}

  get gpu(): Gpu {
    return this.unet.gpu;
  }

  /** Tokenizes (truncating with a warning), uploads and encodes prompts; "" is the unconditional input. */
  encodePrompts(prompts: readonly string[], options: EncodeOptions = {}): EncodedPrompts {
    const tokens = this.tokenizer.encode(prompts, options);
    const table = this.textEncoder.textModel.embeddings.tokenEmbedding.weight;
    const ids = uploadTokens(table, tokens.ids, [prompts.length, this.tokenizer.maxLength]);
    return { hiddenStates: this.textEncoder.forward(ids), ids, tokens };
  }

  /** Text encoder and UNet parameters, prefixed "text_encoder." and "unet." (optimizer state names). */
  namedParameters(): Map<string, Tensor> {
    return new Map([
      ...this.textEncoder.namedParameters("text_encoder."),
      ...this.unet.namedParameters("unet."),
    ]);
  }

  parameters(): Tensor[] {
    return [...this.namedParameters().values()];
  }

  parameterCounts(): { textEncoder: number; unet: number; total: number } {
    const textEncoder = this.textEncoder.parameterCount();
    const unet = this.unet.parameterCount();
    return { textEncoder, unet, total: textEncoder + unet };
  }

  train(training = true): this {
    this.textEncoder.train(training);
    this.unet.train(training);
    return this;
  }

  /** Writes the four files into `dir` (created if needed), each atomically, config.json last. */
  async save(dir: string, metadata: Record<string, string> = {}): Promise<void> {
    mkdirSync(join(dir, "text_encoder"), { recursive: true });
    mkdirSync(join(dir, "unet"), { recursive: true });
    const [textState, unetState] = await Promise.all([this.textEncoder.state(), this.unet.state()]);
    const toWrite = (state: Map<string, { shape: readonly number[]; data: Float32Array }>) => {
      const tensors = new Map<string, TensorToWrite>();
      for (const [name, entry] of state) tensors.set(name, { shape: entry.shape, data: entry.data });
      return tensors;
    };
    const fileMetadata = { format: "pt", model: this.config.name, ...metadata };
    writeSafetensors(join(dir, MODEL_FILES.textEncoder), toWrite(textState), fileMetadata);
    writeSafetensors(join(dir, MODEL_FILES.unet), toWrite(unetState), fileMetadata);
    writeFileAtomic(join(dir, MODEL_FILES.tokenizer), `${JSON.stringify(this.tokenizer.toJSON())}\n`);
    writeFileAtomic(
      join(dir, MODEL_FILES.config),
      `${JSON.stringify({ format: MODEL_FORMAT, ...this.config }, null, 2)}\n`,
    );
  }

  /**
   * Loads the weights of `dir` into this model (its config.json is not consulted). Both files are
   * checked before anything changes; every mismatch is listed.
   */
  loadWeights(dir: string): void {
    const parts = [
      { module: this.textEncoder, file: join(dir, MODEL_FILES.textEncoder) },
      { module: this.unet, file: join(dir, MODEL_FILES.unet) },
    ] as const;
    const files = parts.map(({ file }) => {
      try {
        return readSafetensors(file);
      } catch (error) {
        throw new CheckpointError(`cannot load ${file}: ${(error as Error).message}`);
      }
    });
    const problems: string[] = [];
    parts.forEach(({ module, file }, index) => {
      const mismatches = stateMismatches(module.stateTensors(), files[index].tensors);
      if (mismatches.length > 0) {
        problems.push(`${file} (${mismatches.length} mismatches):\n    ${mismatches.join("\n    ")}`);
      }
    });
    if (problems.length > 0) {
      throw new CheckpointError(
        `checkpoint ${dir} does not match the configuration "${this.config.name}":\n  ${problems.join("\n  ")}`,
      );
    }
    parts.forEach(({ module, file }, index) => {
      module.loadState(files[index].tensors, true, file);
    });
  }

  /** Reads config.json and tokenizer.json of `dir`, builds the model and loads its weights. */
  static load(gpu: Gpu, dir: string, precision: Precision = "f32"): DiffusionModel {
    const model = createDiffusionModel(gpu, readModelConfig(dir), readTokenizer(dir), 0, precision);
    try {
      model.loadWeights(dir);
    } catch (error) {
      model.dispose();
      throw error;
    }
    return model;
  }

  /**
   * The model of `dir` with transformer blocks added at UNet `levels` (`withAttentionAt`): every
   * tensor of `dir` is loaded into the tensor of the same name, the new blocks keep `seed`'s
   * initialisation except their proj_out, which starts at zero. A transformer block adds proj_out's
   * output to its input, so each new block starts as the identity and the grown model computes what
   * the model of `dir` computed until training moves the new weights. Returns the new tensors' names.
   * CheckpointError when a file of `dir` does not fit: a tensor the grown model lacks or shapes
   * differently, or a missing tensor outside the new blocks.
   */
  static grow(
    gpu: Gpu,
    dir: string,
    levels: readonly number[],
    seed = 0,
  ): { model: DiffusionModel; added: string[] } {
    const initial = readModelConfig(dir);
    let config: DiffusionModelConfig;
    try {
      config = withAttentionAt(initial, levels);
    } catch (error) {
      throw new CheckpointError(`${join(dir, MODEL_FILES.config)}: ${(error as Error).message}`);
    }
    const count = config.unet.blockOutChannels.length;
    const newBlocks = levels.flatMap((level) => [
      `down_blocks.${level}.attentions.`,
      `up_blocks.${count - 1 - level}.attentions.`,
    ]);
    const model = createDiffusionModel(gpu, config, readTokenizer(dir), seed);
    try {
      const added: string[] = [];
      const problems: string[] = [];
      for (const { module, file, isNew } of [
        { module: model.textEncoder, file: join(dir, MODEL_FILES.textEncoder), isNew: (_: string) => false },
        {
          module: model.unet,
          file: join(dir, MODEL_FILES.unet),
          isNew: (name: string) => newBlocks.some((prefix) => name.startsWith(prefix)),
        },
      ]) {
        let stored: ReturnType<typeof readSafetensors>;
        try {
          stored = readSafetensors(file);
        } catch (error) {
          throw new CheckpointError(`cannot load ${file}: ${(error as Error).message}`);
        }
        const own = module.stateTensors();
        const fileProblems = stateMismatches(own, stored.tensors).filter((problem) => {
          const missing = /^missing "([^"]+)"/.exec(problem);
          return missing === null || !isNew(missing[1]);
        });
        if (fileProblems.length > 0) {
          problems.push(`${file} (${fileProblems.length} mismatches):\n    ${fileProblems.join("\n    ")}`);
          continue;
        }
        module.loadState(stored.tensors, false, file);
        for (const [name, tensor] of own) {
          if (stored.tensors.has(name)) continue;
          added.push(name);
          if (/\.proj_out\.(weight|bias)$/.test(name)) tensor.write(new Float32Array(tensor.size));
        }
      }
      if (problems.length > 0) {
        throw new CheckpointError(
          `checkpoint ${dir} cannot grow into "${config.name}":\n  ${problems.join("\n  ")}`,
        );
      }
      return { model, added };
    } catch (error) {
      model.dispose();
      throw error;
    }
  }

  dispose(): void {
    this.textEncoder.dispose();
    this.unet.dispose();
  }
}

/** The tokenizer.json of a model folder (CheckpointError naming the file). */
function readTokenizer(dir: string): WordTokenizer {
  const tokenizerPath = join(dir, MODEL_FILES.tokenizer);
  try {
    return WordTokenizer.fromJSON(readJson(tokenizerPath, "tokenizer"), tokenizerPath);
  } catch (error) {
    throw new CheckpointError((error as Error).message);
  }
}

/** The checked configuration in a model folder's config.json (CheckpointError naming the file). */
export function readModelConfig(dir: string): DiffusionModelConfig {
  const configPath = join(dir, MODEL_FILES.config);
  const raw = readJson(configPath, "model configuration") as DiffusionModelConfig & { format?: string };
  if (typeof raw !== "object" || raw === null || raw.format !== MODEL_FORMAT) {
    throw new CheckpointError(`${configPath}: expected "format": "${MODEL_FORMAT}"`);
  }
  const { format: _format, ...config } = raw;
  try {
    checkConfig(config, configPath);
  } catch (error) {
    throw new CheckpointError((error as Error).message);
  }
  return config;
}

/**
 * A freshly initialised model. The tokenizer's vocabulary must fit the text encoder's vocabSize and
 * its context must equal maxPositions.
 */
export function createDiffusionModel(
  gpu: Gpu,
  config: DiffusionModelConfig,
  tokenizer: WordTokenizer,
  seed = 0,
  precision: Precision = "f32",
): DiffusionModel {
  checkConfig(config);
  const text = config.textEncoder;
  if (tokenizer.vocabularySize > text.vocabSize) {
    throw new CheckpointError(
      `the tokenizer has ${tokenizer.vocabularySize} tokens, more than textEncoder.vocabSize ${text.vocabSize} of "${config.name}"`,
    );
  }
  if (tokenizer.maxLength !== text.maxPositions) {
    throw new CheckpointError(
      `the tokenizer's context (${tokenizer.maxLength}) differs from textEncoder.maxPositions ${text.maxPositions} of "${config.name}"`,
    );
  }
  // precision "f16": the text encoder's and the UNet's weights and activations in f16 (inference only).
  if (precision === "f16" && !gpu.features.has("shader-f16")) throw new PrecisionError(gpu);
  const init = new ParameterInit(seed);
  const textEncoder = withParameterDtype(precision, () => new ClipTextModel(gpu, text, init));
  const unet = withParameterDtype(precision, () => new UNet2DConditionModel(gpu, config.unet, init));
  return new DiffusionModel(structuredClone(config), tokenizer, textEncoder, unet);
}
