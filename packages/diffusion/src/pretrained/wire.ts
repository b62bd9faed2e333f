/**
 * A published diffusers folder onto the generator's modules: unet/config.json and
 * text_encoder/config.json translated into `UNetConfig` / `TextEncoderConfig` (model/config.ts),
 * scheduler/scheduler_config.json into the samplers' `SchedulerConfig`, and the diffusers-named
 * weights loaded strictly (every name and shape checked, all mismatches listed) into
 * `UNet2DConditionModel`, `ClipTextModel` and our `AutoencoderKL`, one tensor at a time.
 *
 * The latent pipeline on these pieces is `generateLatent` (latent-pipeline.ts); `cxr generate --model
 * FOLDER` runs it through `generateFromFolder` (cli.ts) when FOLDER holds a model_index.json.
 */
import { join } from "node:path";
import { type Gpu, ParameterInit, withParameterDtype } from "@cxr/kernels";
import {
  ConfigError,
  type DiffusionModelConfig,
  type TextEncoderConfig,
  type UNetConfig,
} from "../model/config.ts";
import { type Precision, PrecisionError } from "../model/model.ts";
import { ClipTextModel } from "../model/text-encoder.ts";
import { UNet2DConditionModel } from "../model/unet.ts";
import { type SamplerKind, type SchedulerConfig, STABLE_DIFFUSION_SCHEDULER } from "../schedule/samplers.ts";
import { ClipTokenizer } from "./clip-tokenizer.ts";
import type { SchedulerJsonConfig, TextEncoderJsonConfig, UnetJsonConfig } from "./configs.ts";
import {
  type LoadReport,
  loadModuleWeights,
  PretrainedError,
  PretrainedFolder,
  type WeightFileOptions,
} from "./folder.ts";
import { AutoencoderKL, type AutoencoderKLConfig, autoencoderConfigFromJson } from "./vae.ts";

/** diffusers' unet/config.json -> the generator's UNetConfig; unsupported settings name the key. */
export function unetConfigFromJson(json: UnetJsonConfig, file = "unet/config.json"): UNetConfig {
  const levels = json.block_out_channels.length;
  const single = (key: "layers_per_block" | "transformer_layers_per_block"): number => {
    const value = json[key];
    if (typeof value === "number") return value;
    if (value.some((item) => item !== value[0])) {
      throw new PretrainedError(
        file,
        `key "${key}" = ${JSON.stringify(value)}: different values per level are not supported`,
      );
    }
    return value[0];
  };
  if (json.mid_block_scale_factor !== 1) {
    throw new PretrainedError(
      file,
      `key "mid_block_scale_factor" = ${json.mid_block_scale_factor}: only 1 (Stable Diffusion's) is supported`,
    );
  }
  // diffusers: num_attention_heads, when given, is the head count; else attention_head_dim is (historically) used as it.
  const heads = json.num_attention_heads ?? json.attention_head_dim;
  if (Array.isArray(heads) && heads.length !== levels) {
    throw new PretrainedError(
      file,
      `key "attention_head_dim" lists ${heads.length} values for ${levels} levels`,
    );
  }
  return {
    sampleSize: json.sample_size,
    inChannels: json.in_channels,
    outChannels: json.out_channels,
    blockOutChannels: [...json.block_out_channels],
    layersPerBlock: single("layers_per_block"),
    downBlockTypes: [...json.down_block_types],
    upBlockTypes: [...json.up_block_types],
    attentionHeadDim: Array.isArray(heads) ? [...heads] : heads,
    crossAttentionDim: json.cross_attention_dim,
    normNumGroups: json.norm_num_groups,
    normEps: json.norm_eps,
    useLinearProjection: json.use_linear_projection,
    flipSinToCos: json.flip_sin_to_cos,
    freqShift: json.freq_shift,
    transformerLayersPerBlock: single("transformer_layers_per_block"),
    downsamplePadding: json.downsample_padding,
  };
}

/** transformers' text_encoder/config.json -> TextEncoderConfig. */
export function textEncoderConfigFromJson(json: TextEncoderJsonConfig): TextEncoderConfig {
  return {
    vocabSize: json.vocab_size,
    hiddenSize: json.hidden_size,
    intermediateSize: json.intermediate_size,
    numLayers: json.num_hidden_layers,
    numHeads: json.num_attention_heads,
    maxPositions: json.max_position_embeddings,
    hiddenAct: json.hidden_act,
    layerNormEps: json.layer_norm_eps,
  };
}

const SAMPLER_OF_CLASS: Record<SchedulerJsonConfig["_class_name"], SamplerKind> = {
  PNDMScheduler: "pndm",
  DDIMScheduler: "ddim",
  DDPMScheduler: "ddpm",
  DPMSolverMultistepScheduler: "dpmpp-2m",
};

/** scheduler/scheduler_config.json -> the sampler kind it names and the samplers' SchedulerConfig. */
export function schedulerFromJson(
  json: SchedulerJsonConfig,
  file = "scheduler/scheduler_config.json",
): { kind: SamplerKind; config: SchedulerConfig } {
  if (json._class_name === "PNDMScheduler" && !json.skip_prk_steps) {
    throw new PretrainedError(
      file,
      `key "skip_prk_steps" = false: only PNDM with skip_prk_steps (PLMS, what Stable Diffusion uses) is implemented`,
    );
  }
  return {
    kind: SAMPLER_OF_CLASS[json._class_name],
    config: {
      ...STABLE_DIFFUSION_SCHEDULER,
      kind: json.beta_schedule,
      numTrainTimesteps: json.num_train_timesteps,
      betaStart: json.beta_start,
      betaEnd: json.beta_end,
      predictionType: json.prediction_type,
      setAlphaToOne: json.set_alpha_to_one,
      stepsOffset: json.steps_offset,
      timestepSpacing: json.timestep_spacing,
      clipSample: json.clip_sample,
      clipSampleRange: json.clip_sample_range,
    },
  };
}

/**
 * The generator's DiffusionModelConfig of a diffusers Stable Diffusion folder: latent space, image
 * side = UNet sample_size x the VAE's downsampling (SD 2.1-base: 64 x 8 = 512), 3 channels.
 */
export function diffusionConfigFromFolder(
  folder: PretrainedFolder,
  name = "pretrained",
): DiffusionModelConfig {
  const unetFile = join(folder.root, "unet", "config.json");
  const unet = unetConfigFromJson(folder.unetConfig(), unetFile);
  const textEncoder = textEncoderConfigFromJson(folder.textEncoderConfig());
  const vae = folder.vaeConfig();
  const scheduler = folder.schedulerConfig();
  if (unet.crossAttentionDim !== textEncoder.hiddenSize) {
    throw new PretrainedError(
      unetFile,
      `key "cross_attention_dim" = ${unet.crossAttentionDim} but text_encoder/config.json has hidden_size ${textEncoder.hiddenSize}`,
    );
  }
  if (unet.inChannels !== vae.latent_channels) {
    throw new PretrainedError(
      unetFile,
      `key "in_channels" = ${unet.inChannels} but the VAE has ${vae.latent_channels} latent channels`,
    );
  }
  if (scheduler.prediction_type === "sample") {
    throw new PretrainedError(
      join(folder.root, "scheduler", "scheduler_config.json"),
      `key "prediction_type" = "sample": the generator handles epsilon and v_prediction`,
    );
  }
  return {
    name,
    resolution: unet.sampleSize * 2 ** (vae.block_out_channels.length - 1),
    channels: vae.out_channels,
    space: "latent",
    textEncoder,
    unet,
    prediction: scheduler.prediction_type,
    schedule: {
      betaSchedule: scheduler.beta_schedule,
      betaStart: scheduler.beta_start,
      betaEnd: scheduler.beta_end,
      numTrainTimesteps: scheduler.num_train_timesteps,
    },
  };
}

/** transformers' CLIP checkpoints may hold the position_ids buffer; our model computes it. */
const TEXT_ENCODER_IGNORED = (name: string) => name === "text_model.embeddings.position_ids";

/** The precision option of the loaders: f16 needs the adapter's shader-f16 (PrecisionError). */
function checkedPrecision(gpu: Gpu, options: { precision?: Precision }): Precision {
  const precision = options.precision ?? "f32";
  if (precision === "f16" && !gpu.features.has("shader-f16")) throw new PrecisionError(gpu);
  return precision;
}

export function loadPretrainedTextEncoder(
  gpu: Gpu,
  folder: PretrainedFolder,
  options: WeightFileOptions & { precision?: Precision } = {},
): { model: ClipTextModel; report: LoadReport } {
  // precision f16: built with f16 parameters, filled from the file's values rounded to f16 (readHalf).
  const precision = checkedPrecision(gpu, options);
  const config = textEncoderConfigFromJson(folder.textEncoderConfig());
  const model = withParameterDtype(precision, () => new ClipTextModel(gpu, config, new ParameterInit(0)));
  const weights = folder.weights("text_encoder", options);
  try {
    return { model, report: loadModuleWeights(model, weights, { ignore: TEXT_ENCODER_IGNORED }) };
  } catch (error) {
    model.dispose();
    throw error;
  } finally {
    weights.close();
  }
}

export function loadPretrainedUnet(
  gpu: Gpu,
  folder: PretrainedFolder,
  options: WeightFileOptions & { precision?: Precision } = {},
): { model: UNet2DConditionModel; report: LoadReport } {
  const config = unetConfigFromJson(folder.unetConfig(), join(folder.root, "unet", "config.json"));
  const precision = checkedPrecision(gpu, options);
  let model: UNet2DConditionModel;
  try {
    model = withParameterDtype(precision, () => new UNet2DConditionModel(gpu, config, new ParameterInit(0)));
  } catch (error) {
    if (error instanceof ConfigError)
      throw new PretrainedError(join(folder.root, "unet", "config.json"), error.message);
    throw error;
  }
  const weights = folder.weights("unet", options);
  try {
    return { model, report: loadModuleWeights(model, weights) };
  } catch (error) {
    model.dispose();
    throw error;
  } finally {
    weights.close();
  }
}

export function loadPretrainedVae(
  gpu: Gpu,
  folder: PretrainedFolder,
  options: WeightFileOptions & { precision?: Precision } = {},
): { model: AutoencoderKL; config: AutoencoderKLConfig; report: LoadReport } {
  const precision = checkedPrecision(gpu, options);
  const config = autoencoderConfigFromJson(folder.vaeConfig());
  const model = withParameterDtype(precision, () => new AutoencoderKL(gpu, config));
  const weights = folder.weights("vae", options);
  try {
    return { model, config, report: loadModuleWeights(model, weights) };
  } catch (error) {
    model.dispose();
    throw error;
  } finally {
    weights.close();
  }
}

export interface PretrainedComponents {
  config: DiffusionModelConfig;
  tokenizer: ClipTokenizer;
  textEncoder: ClipTextModel;
  unet: UNet2DConditionModel;
  vae: AutoencoderKL;
  scheduler: { kind: SamplerKind; config: SchedulerConfig };
  reports: { textEncoder: LoadReport; unet: LoadReport; vae: LoadReport };
}

/**
 * Opens a full Stable Diffusion folder and loads every component (all configs validated first).
 * `precision` "f16" loads the text encoder, the UNet and the VAE with f16 weights (their f16 kernels;
 * inference only), refused before anything is read on an adapter without shader-f16.
 */
export function loadPretrainedComponents(
  gpu: Gpu,
  root: string,
  options: WeightFileOptions & { precision?: Precision } = {},
): PretrainedComponents {
  checkedPrecision(gpu, options);
  const folder = PretrainedFolder.open(root);
  const config = diffusionConfigFromFolder(folder);
  const scheduler = schedulerFromJson(
    folder.schedulerConfig(),
    join(folder.root, "scheduler", "scheduler_config.json"),
  );
  const tokenizer = ClipTokenizer.fromFiles(folder.tokenizerFiles());
  if (tokenizer.vocab.size > config.textEncoder.vocabSize) {
    throw new PretrainedError(
      join(folder.root, "tokenizer", "vocab.json"),
      `${tokenizer.vocab.size} tokens, more than the text encoder's vocab_size ${config.textEncoder.vocabSize}`,
    );
  }
  const loaded: Partial<PretrainedComponents> = {};
  try {
    const text = loadPretrainedTextEncoder(gpu, folder, options);
    loaded.textEncoder = text.model;
    const unet = loadPretrainedUnet(gpu, folder, options);
    loaded.unet = unet.model;
    const vae = loadPretrainedVae(gpu, folder, options);
    return {
      config,
      tokenizer,
      textEncoder: text.model,
      unet: unet.model,
      vae: vae.model,
      scheduler,
      reports: { textEncoder: text.report, unet: unet.report, vae: vae.report },
    };
  } catch (error) {
    loaded.textEncoder?.dispose();
    loaded.unet?.dispose();
    throw error;
  }
}
