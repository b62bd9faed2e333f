/**
 * A diffusers Stable Diffusion folder (Stable Diffusion 2.x, RoentGen-v2) on disk:
 *
 *   model_index.json               component -> [library, class]
 *   unet/config.json + diffusion_pytorch_model[.fp16].safetensors (or sharded with an index JSON)
 *   vae/config.json  + diffusion_pytorch_model[.fp16].safetensors
 *   text_encoder/config.json + model[.fp16].safetensors
 *   tokenizer/vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json
 *   scheduler/scheduler_config.json
 *
 * Every file is validated (configs with the zod schemas of configs.ts) and every problem is an error
 * naming the file and the key. Weights are opened as streaming `WeightSource`s (only headers are
 * read) and loaded into a `Module` one tensor at a time after a strict name and shape check.
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Module, Tensor } from "@cxr/kernels";
import type * as z from "zod";
import {
  type ComponentName,
  type ModelIndex,
  modelIndexSchema,
  REQUIRED_COMPONENTS,
  type SchedulerJsonConfig,
  schedulerConfigSchema,
  type TextEncoderJsonConfig,
  textEncoderConfigSchema,
  type UnetJsonConfig,
  unetConfigSchema,
  type VaeJsonConfig,
  vaeConfigSchema,
} from "./configs.ts";
import { type WeightDType, WeightSource, WeightsError } from "./safetensors-stream.ts";

export class PretrainedError extends Error {
  constructor(
    readonly file: string,
    message: string,
  ) {
    super(`${file}: ${message}`);
    this.name = "PretrainedError";
  }
}

function valueAt(raw: unknown, path: readonly PropertyKey[]): unknown {
  let value = raw;
  for (const key of path) {
    if (value === null || typeof value !== "object") return undefined;
    value = (value as Record<PropertyKey, unknown>)[key];
  }
  return value;
}

function keyName(path: readonly PropertyKey[]): string {
  return path.reduce<string>(
    (text, key) =>
      typeof key === "number" ? `${text}[${key}]` : text ? `${text}.${String(key)}` : String(key),
    "",
  );
}

/** Turns zod issues into one message per key: `key "down_block_types[2]" = "X": why`. */
export function describeIssues(raw: unknown, error: z.ZodError): string {
  return error.issues
    .map((issue) => {
      const value = valueAt(raw, issue.path);
      const shown = value === undefined ? "is missing" : `= ${JSON.stringify(value)}`;
      let why = issue.message;
      if (issue.code === "invalid_value" && "values" in issue) {
        why = `unsupported value (supported: ${(issue.values as unknown[]).map((item) => JSON.stringify(item)).join(", ")})`;
      }
      return `key "${keyName(issue.path) || "(root)"}" ${shown}: ${why}`;
    })
    .join("; ");
}

/** Reads a JSON file and validates it; errors name the file and each offending key. */
export function readJsonFile<S extends z.ZodType>(file: string, schema: S): z.infer<S> {
  if (!existsSync(file)) throw new PretrainedError(file, "file not found");
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, "utf8"));
  } catch (error) {
    throw new PretrainedError(file, `not valid JSON (${(error as Error).message})`);
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) throw new PretrainedError(file, describeIssues(raw, parsed.error));
  return parsed.data;
}

const WEIGHT_STEMS = ["diffusion_pytorch_model", "model"];
const PICKLE_EXTENSIONS = [".bin", ".ckpt", ".pt", ".pth"];

export interface WeightFileOptions {
  /** diffusers' variant, e.g. "fp16" for `diffusion_pytorch_model.fp16.safetensors`. */
  variant?: string;
}

/**
 * Finds a component's weights: `<stem>[.variant].safetensors`, or the sharded
 * `<stem>[.variant].safetensors.index.json`. Pickled weights (.bin/.ckpt/.pt/.pth) are refused with
 * the command that converts them.
 */
export function findWeightFile(directory: string, options: WeightFileOptions = {}): string {
  const suffix = options.variant ? `.${options.variant}` : "";
  for (const stem of WEIGHT_STEMS) {
    const single = join(directory, `${stem}${suffix}.safetensors`);
    if (existsSync(single)) return single;
    const index = join(directory, `${stem}${suffix}.safetensors.index.json`);
    if (existsSync(index)) return index;
  }
  const files = existsSync(directory) ? readdirSync(directory) : [];
  const pickles = files.filter((file) => PICKLE_EXTENSIONS.some((extension) => file.endsWith(extension)));
  if (pickles.length > 0) {
    const file = join(directory, pickles[0]);
    throw new PretrainedError(
      file,
      "PyTorch pickle weights are not loaded (unpickling can run arbitrary code, and reading them needs PyTorch). " +
        `Convert them once where torch is installed: \`cxr convert ${file} ${join(directory, `${pickles[0].startsWith("model") ? "model" : "diffusion_pytorch_model"}.safetensors`)}\``,
    );
  }
  const expected = WEIGHT_STEMS.map((stem) => `${stem}${suffix}.safetensors`).join(" or ");
  throw new PretrainedError(
    directory,
    `no weights: expected ${expected} (or a sharded *.safetensors.index.json)${files.length ? `; found ${files.join(", ")}` : ""}`,
  );
}

/** Opens a .safetensors file or a sharded *.safetensors.index.json. */
export function openWeights(path: string): WeightSource {
  return path.endsWith(".index.json") ? WeightSource.openIndex(path) : WeightSource.openFile(path);
}

/** A shape per tensor name: what a module expects. */
export type ExpectedShapes = ReadonlyMap<string, readonly number[]>;

export interface NameCheckOptions {
  /** Names in the file to leave out (e.g. transformers' `position_ids` buffer). */
  ignore?: (name: string) => boolean;
  /** Prefix stripped from the file's names before matching (e.g. "text_model." is kept by default). */
  stripPrefix?: string;
}

/** Every mismatch between a module's names/shapes and a weight file, one line each. */
export function weightMismatches(
  expected: ExpectedShapes,
  source: WeightSource,
  options: NameCheckOptions = {},
): string[] {
  const problems: string[] = [];
  const fileNames = new Map<string, string>();
  for (const name of source.names) {
    if (options.ignore?.(name)) continue;
    const key =
      options.stripPrefix && name.startsWith(options.stripPrefix)
        ? name.slice(options.stripPrefix.length)
        : name;
    fileNames.set(key, name);
  }
  for (const [name, shape] of expected) {
    const stored = fileNames.get(name);
    if (stored === undefined) {
      problems.push(`missing "${name}" [${shape.join(", ")}]`);
      continue;
    }
    const entry = source.entries.get(stored);
    if (!entry) continue;
    if (entry.shape.length !== shape.length || entry.shape.some((dim, index) => dim !== shape[index])) {
      problems.push(
        `"${name}" is [${entry.shape.join(", ")}] in the file, the model needs [${shape.join(", ")}]`,
      );
    } else if (!["F32", "F16", "BF16"].includes(entry.dtype)) {
      problems.push(`"${name}" is stored as ${entry.dtype}, not a floating-point weight`);
    }
  }
  for (const [name, stored] of fileNames) if (!expected.has(name)) problems.push(`unexpected "${stored}"`);
  return problems;
}

export interface LoadReport {
  /** Tensors loaded, and how they were stored. */
  tensors: number;
  storedAs: Partial<Record<WeightDType, number>>;
  /** Bytes read from disk. */
  bytes: number;
  /** The largest single tensor read (bytes of its f32 copy): the loader's peak extra host memory. */
  largestTensorBytes: number;
}

/**
 * Strictly loads a module's parameters and buffers from a weight source: all names and shapes are
 * checked first and every mismatch is listed in one error (nothing is changed then); the tensors are
 * then read, converted to f32 and written to the GPU one at a time through the source's reuse
 * buffers, so host memory beyond the GPU copy is one tensor's bytes plus its f32 values.
 */
export function loadModuleWeights(
  module: Module,
  source: WeightSource,
  options: NameCheckOptions = {},
): LoadReport {
  const own = module.stateTensors();
  const expected = new Map([...own].map(([name, tensor]) => [name, tensor.shape] as const));
  const problems = weightMismatches(expected, source, options);
  if (problems.length > 0) {
    const shown = problems.slice(0, 40).join("\n  ");
    const more = problems.length > 40 ? `\n  ... and ${problems.length - 40} more` : "";
    throw new WeightsError(
      source.path,
      `${problems.length} mismatch${problems.length > 1 ? "es" : ""} with ${module.constructor.name}:\n  ${shown}${more}`,
    );
  }
  const report: LoadReport = { tensors: 0, storedAs: {}, bytes: 0, largestTensorBytes: 0 };
  const prefix = options.stripPrefix ?? "";
  for (const [name, tensor] of own) {
    const stored = source.entries.has(prefix + name) ? prefix + name : name;
    const weight = tensor.dtype === "f16" ? source.readHalf(stored) : source.read(stored, { reuse: true });
    writeTensor(tensor, weight.data);
    report.tensors++;
    report.storedAs[weight.storedAs] = (report.storedAs[weight.storedAs] ?? 0) + 1;
    const entry = source.entries.get(stored);
    if (entry) report.bytes += entry.end - entry.begin;
    report.largestTensorBytes = Math.max(report.largestTensorBytes, weight.data.byteLength);
  }
  return report;
}

/**
 * Overwrites a GPU tensor's contents through `Tensor.writeBytes` (queue.writeBuffer, which copies the
 * data before returning; counted as a write for the conv2d weight cache): f32 values, or f16 bits for
 * an f16 tensor.
 */
function writeTensor(tensor: Tensor, values: Float32Array | Uint16Array): void {
  if (values instanceof Uint16Array !== (tensor.dtype === "f16")) {
    throw new Error(`writeTensor: ${tensor.dtype} tensor given ${values.constructor.name} data (internal)`);
  }
  tensor.writeBytes(values);
}

export interface TokenizerFiles {
  vocab: string;
  merges: string;
  tokenizerConfig: string | null;
  specialTokensMap: string | null;
}

/** An opened diffusers folder: validated model index, per-component configs and weights on demand. */
export class PretrainedFolder {
  private constructor(
    readonly root: string,
    readonly index: ModelIndex,
  ) {}

  /**
   * Opens `root`, validating model_index.json and that each of `require` (default: all five
   * text-to-image components) is declared there and present as a folder.
   */
  static open(root: string, options: { require?: readonly ComponentName[] } = {}): PretrainedFolder {
    const directory = resolve(root);
    if (!existsSync(directory) || !statSync(directory).isDirectory()) {
      throw new PretrainedError(
        directory,
        "not a folder (expected a diffusers model folder with model_index.json)",
      );
    }
    const indexFile = join(directory, "model_index.json");
    const index = readJsonFile(indexFile, modelIndexSchema);
    const required = options.require ?? REQUIRED_COMPONENTS;
    for (const component of required) {
      if (!index[component]) {
        throw new PretrainedError(
          indexFile,
          `component "${component}" is missing (a Stable Diffusion folder declares ${REQUIRED_COMPONENTS.join(", ")})`,
        );
      }
      const folder = join(directory, component);
      if (!existsSync(folder) || !statSync(folder).isDirectory()) {
        throw new PretrainedError(
          folder,
          `component folder is missing (model_index.json declares ${component} as ${JSON.stringify(index[component])})`,
        );
      }
    }
    return new PretrainedFolder(directory, index);
  }

  componentDir(component: ComponentName): string {
    const folder = join(this.root, component);
    if (!this.index[component] || !existsSync(folder)) {
      throw new PretrainedError(folder, `component "${component}" is not in this folder`);
    }
    return folder;
  }

  vaeConfig(): VaeJsonConfig {
    const config = readJsonFile(join(this.componentDir("vae"), "config.json"), vaeConfigSchema);
    const file = join(this.root, "vae", "config.json");
    if (config.down_block_types.length !== config.block_out_channels.length) {
      throw new PretrainedError(
        file,
        `key "down_block_types" has ${config.down_block_types.length} blocks but "block_out_channels" ${config.block_out_channels.length}`,
      );
    }
    if (config.up_block_types.length !== config.block_out_channels.length) {
      throw new PretrainedError(
        file,
        `key "up_block_types" has ${config.up_block_types.length} blocks but "block_out_channels" ${config.block_out_channels.length}`,
      );
    }
    for (const channels of config.block_out_channels) {
      if (channels % config.norm_num_groups !== 0) {
        throw new PretrainedError(
          file,
          `key "block_out_channels" value ${channels} is not divisible by norm_num_groups ${config.norm_num_groups}`,
        );
      }
    }
    return config;
  }

  unetConfig(): UnetJsonConfig {
    const file = join(this.componentDir("unet"), "config.json");
    const config = readJsonFile(file, unetConfigSchema);
    const levels = config.block_out_channels.length;
    for (const key of ["down_block_types", "up_block_types"] as const) {
      if (config[key].length !== levels) {
        throw new PretrainedError(
          file,
          `key "${key}" has ${config[key].length} blocks but "block_out_channels" ${levels}`,
        );
      }
    }
    for (const key of ["attention_head_dim", "layers_per_block", "transformer_layers_per_block"] as const) {
      const value = config[key];
      if (Array.isArray(value) && value.length !== levels) {
        throw new PretrainedError(file, `key "${key}" lists ${value.length} values for ${levels} levels`);
      }
    }
    return config;
  }

  textEncoderConfig(): TextEncoderJsonConfig {
    const file = join(this.componentDir("text_encoder"), "config.json");
    const config = readJsonFile(file, textEncoderConfigSchema);
    if (config.hidden_size % config.num_attention_heads !== 0) {
      throw new PretrainedError(
        file,
        `key "hidden_size" ${config.hidden_size} is not divisible by num_attention_heads ${config.num_attention_heads}`,
      );
    }
    return config;
  }

  schedulerConfig(): SchedulerJsonConfig {
    return readJsonFile(join(this.componentDir("scheduler"), "scheduler_config.json"), schedulerConfigSchema);
  }

  tokenizerFiles(): TokenizerFiles {
    const folder = this.componentDir("tokenizer");
    const files = {
      vocab: join(folder, "vocab.json"),
      merges: join(folder, "merges.txt"),
      tokenizerConfig: join(folder, "tokenizer_config.json"),
      specialTokensMap: join(folder, "special_tokens_map.json"),
    };
    for (const required of [files.vocab, files.merges]) {
      if (!existsSync(required))
        throw new PretrainedError(
          required,
          "file not found (the CLIP tokenizer needs vocab.json and merges.txt)",
        );
    }
    return {
      vocab: files.vocab,
      merges: files.merges,
      tokenizerConfig: existsSync(files.tokenizerConfig) ? files.tokenizerConfig : null,
      specialTokensMap: existsSync(files.specialTokensMap) ? files.specialTokensMap : null,
    };
  }

  /** The component's weights, opened for streaming (headers only). */
  weights(component: "unet" | "vae" | "text_encoder", options: WeightFileOptions = {}): WeightSource {
    return openWeights(findWeightFile(this.componentDir(component), options));
  }
}
