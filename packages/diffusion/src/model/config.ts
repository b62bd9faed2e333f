/**
 * Typed configurations of the text encoder and the UNet. Keys mirror the `config.json` of
 * transformers' CLIPTextModel and diffusers' UNet2DConditionModel (camelCase here), so a published
 * Stable Diffusion 2.x configuration is expressible, and our named phantom configurations are the
 * same architecture at a size a CPU can train.
 */

import { SAMPLER_KINDS, type SamplerKind } from "../schedule/samplers.ts";

export type HiddenAct = "quick_gelu" | "gelu";

export interface TextEncoderConfig {
  /** Rows of the token embedding (the tokenizer's vocabulary must fit). */
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  /** Context length: the tokenizer pads and truncates prompts to this many tokens. */
  maxPositions: number;
  hiddenAct: HiddenAct;
  layerNormEps: number;
}

export type DownBlockType = "DownBlock2D" | "CrossAttnDownBlock2D";
export type UpBlockType = "UpBlock2D" | "CrossAttnUpBlock2D";

export interface UNetConfig {
  sampleSize: number;
  inChannels: number;
  outChannels: number;
  blockOutChannels: number[];
  layersPerBlock: number;
  downBlockTypes: DownBlockType[];
  upBlockTypes: UpBlockType[];
  /**
   * diffusers' `attention_head_dim`, which (for historical reasons, see diffusers'
   * UNet2DConditionModel) is the NUMBER OF HEADS per level: SD 2.x's [5, 10, 20, 20] gives heads of
   * 320/5 = 640/10 = 1280/20 = 64 channels. A number applies to every level.
   */
  attentionHeadDim: number | number[];
  crossAttentionDim: number;
  normNumGroups: number;
  normEps: number;
  /** Linear proj_in/proj_out in the transformer blocks (SD 2.x) instead of 1x1 convolutions (SD 1.x). */
  useLinearProjection: boolean;
  flipSinToCos: boolean;
  freqShift: number;
  /** Transformer blocks per attention (diffusers' `transformer_layers_per_block`, 1 in SD). */
  transformerLayersPerBlock: number;
  /** diffusers' `downsample_padding` (1 in SD). */
  downsamplePadding: number;
}

export interface ScheduleConfig {
  betaSchedule: "linear" | "scaled_linear" | "squaredcos_cap_v2";
  betaStart: number;
  betaEnd: number;
  numTrainTimesteps: number;
}

/**
 * What a model's UNet is trained to predict: the noise, or v = sqrt(abar) eps - sqrt(1 - abar) x0
 * (noising.ts' `PredictionType` adds "sample" for conversions).
 */
export const TRAINED_PREDICTIONS = ["epsilon", "v_prediction"] as const;
export type TrainedPrediction = (typeof TRAINED_PREDICTIONS)[number];

/** Why `value` is not a trained prediction type, or null when it is (config.json and TrainOptions). */
export function predictionProblem(value: unknown): string | null {
  if ((TRAINED_PREDICTIONS as readonly unknown[]).includes(value)) return null;
  return `prediction must be ${TRAINED_PREDICTIONS.map((type) => JSON.stringify(type)).join(" or ")}, got ${JSON.stringify(value)}`;
}

export interface DiffusionModelConfig {
  name: string;
  /** Image side in pixels (pixel space for the phantom configurations). */
  resolution: number;
  /** Image channels (1: grey radiographs). */
  channels: number;
  /**
   * "pixel": the UNet denoises images directly (phantom configurations); "latent": it denoises a VAE's
   * latents (Stable Diffusion: 4 channels at 1/8 of the resolution; the VAE is not part of this model).
   */
  space: "pixel" | "latent";
  textEncoder: TextEncoderConfig;
  unet: UNetConfig;
  prediction: TrainedPrediction;
  schedule: ScheduleConfig;
  /**
   * How this model is sampled when a caller names no sampler or steps (`cxr generate`, the library's
   * `generate`, the server); absent: pipeline.ts' GENERATE_DEFAULTS (PNDM, 50 steps, RoentGen-v2's
   * sampler). Chosen from measurement for a trained model, so the named configurations leave it out.
   */
  sampling?: SamplingDefaults;
}

export interface SamplingDefaults {
  sampler: SamplerKind;
  steps: number;
}

const SD_SCHEDULE: ScheduleConfig = {
  betaSchedule: "scaled_linear",
  betaStart: 0.00085,
  betaEnd: 0.012,
  numTrainTimesteps: 1000,
};

/** Pixel-space phantom models train with the cosine schedule (Nichol & Dhariwal 2021). */
const PIXEL_SCHEDULE: ScheduleConfig = {
  betaSchedule: "squaredcos_cap_v2",
  betaStart: 0.0001,
  betaEnd: 0.02,
  numTrainTimesteps: 1000,
};

const UNET_DEFAULTS = {
  normEps: 1e-5,
  flipSinToCos: true,
  freqShift: 0,
  transformerLayersPerBlock: 1,
  downsamplePadding: 1,
} as const;

/**
 * The shipped-model candidate: 32 px, three levels (32, 64, 64 channels), cross-attention at the
 * lowest level (8x8) and in the middle block. Sized from measured steps (README): attention at the
 * 16x16 level too cost 1.5x the step time (the 256-token attention backward and its feed-forward).
 * 64 tokens hold 99.9% of phantom prompts untruncated (48: 98.7%).
 */
const PHANTOM_SMALL = {
  name: "phantom-small",
  resolution: 32,
  channels: 1,
  space: "pixel",
  textEncoder: {
    vocabSize: 512,
    hiddenSize: 64,
    intermediateSize: 128,
    numLayers: 2,
    numHeads: 4,
    maxPositions: 64,
    hiddenAct: "quick_gelu",
    layerNormEps: 1e-5,
  },
  unet: {
    ...UNET_DEFAULTS,
    sampleSize: 32,
    inChannels: 1,
    outChannels: 1,
    blockOutChannels: [32, 64, 64],
    layersPerBlock: 1,
    downBlockTypes: ["DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"],
    upBlockTypes: ["CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
    attentionHeadDim: [2, 2, 2],
    crossAttentionDim: 64,
    normNumGroups: 16,
    useLinearProjection: true,
  },
  prediction: "epsilon",
  schedule: PIXEL_SCHEDULE,
} satisfies DiffusionModelConfig;

export const DIFFUSION_CONFIGS = {
  /** For tests: two levels at 16 px, seconds per step on lavapipe. */
  "phantom-tiny": {
    name: "phantom-tiny",
    resolution: 16,
    channels: 1,
    space: "pixel",
    textEncoder: {
      vocabSize: 512,
      hiddenSize: 32,
      intermediateSize: 64,
      numLayers: 2,
      numHeads: 2,
      maxPositions: 24,
      hiddenAct: "quick_gelu",
      layerNormEps: 1e-5,
    },
    unet: {
      ...UNET_DEFAULTS,
      sampleSize: 16,
      inChannels: 1,
      outChannels: 1,
      blockOutChannels: [16, 32],
      layersPerBlock: 1,
      downBlockTypes: ["DownBlock2D", "CrossAttnDownBlock2D"],
      upBlockTypes: ["CrossAttnUpBlock2D", "UpBlock2D"],
      attentionHeadDim: 2,
      crossAttentionDim: 32,
      normNumGroups: 8,
      useLinearProjection: true,
    },
    prediction: "epsilon",
    schedule: PIXEL_SCHEDULE,
  },
  "phantom-small": PHANTOM_SMALL,
  /**
   * The planning network, wider and deeper than phantom-small: 32 px, three levels (32, 64,
   * 128 channels), two resnets per level, cross-attention at the lowest level (8x8) and in the middle
   * block, four 32-channel heads there; phantom-small's text encoder. Tried on the effusion measure
   * that phantom-small's phases could not move: from scratch to 44,320 images it separates effusion
   * as phase 9 (shipped then) does, no better (models/phantom-diffusion/README.md); 5.6 M UNet
   * parameters, four times phantom-small's.
   */
  "phantom-base": {
    ...PHANTOM_SMALL,
    name: "phantom-base",
    unet: {
      ...PHANTOM_SMALL.unet,
      blockOutChannels: [32, 64, 128],
      layersPerBlock: 2,
      attentionHeadDim: [1, 2, 4],
    },
  },
  /**
   * Stable Diffusion 2.x base shapes (stabilityai/stable-diffusion-2-1-base: UNet on 4-channel 64x64
   * latents, OpenCLIP ViT-H text encoder used up to its penultimate layer, i.e. 23 layers). Config
   * only: far beyond a CPU adapter; needs the VAE for pixels.
   */
  "sd2-base": {
    name: "sd2-base",
    resolution: 512,
    channels: 3,
    space: "latent",
    textEncoder: {
      vocabSize: 49408,
      hiddenSize: 1024,
      intermediateSize: 4096,
      numLayers: 23,
      numHeads: 16,
      maxPositions: 77,
      hiddenAct: "gelu",
      layerNormEps: 1e-5,
    },
    unet: {
      ...UNET_DEFAULTS,
      sampleSize: 64,
      inChannels: 4,
      outChannels: 4,
      blockOutChannels: [320, 640, 1280, 1280],
      layersPerBlock: 2,
      downBlockTypes: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
      upBlockTypes: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
      attentionHeadDim: [5, 10, 20, 20],
      crossAttentionDim: 1024,
      normNumGroups: 32,
      useLinearProjection: true,
    },
    prediction: "epsilon",
    schedule: SD_SCHEDULE,
  },
} satisfies Record<string, DiffusionModelConfig>;

export type DiffusionConfigName = keyof typeof DIFFUSION_CONFIGS;

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

/** A deep copy of a named configuration; unknown names list the known ones. */
export function diffusionConfig(name: string): DiffusionModelConfig {
  const config = (DIFFUSION_CONFIGS as Record<string, DiffusionModelConfig>)[name];
  if (!config) {
    throw new ConfigError(
      `unknown diffusion config "${name}"; known: ${Object.keys(DIFFUSION_CONFIGS).join(", ")}`,
    );
  }
  return structuredClone(config);
}

/**
 * `config` with transformer blocks (self-attention, cross-attention to the text, GEGLU) added at the
 * given UNet levels (0 = full resolution): the level's down block becomes CrossAttnDownBlock2D and its
 * up block (up_blocks.(levels - 1 - level)) CrossAttnUpBlock2D. Every other tensor keeps its name and
 * shape, so a trained model of `config` can be loaded into it (`DiffusionModel.grow`). Named
 * "<name>+attention<levels>". ConfigError for a level out of range, listed twice or already attending.
 */
export function withAttentionAt(
  config: DiffusionModelConfig,
  levels: readonly number[],
): DiffusionModelConfig {
  const count = config.unet.blockOutChannels.length;
  const problems: string[] = [];
  if (levels.length === 0) problems.push("no level given");
  levels.forEach((level, index) => {
    if (!Number.isSafeInteger(level) || level < 0 || level >= count) {
      problems.push(`level ${level} is not an integer in [0, ${count - 1}]`);
    } else if (levels.indexOf(level) !== index) {
      problems.push(`level ${level} is listed twice`);
    } else if (config.unet.downBlockTypes[level] !== "DownBlock2D") {
      problems.push(`level ${level} (down_blocks.${level}) already has attention`);
    }
  });
  if (problems.length > 0) {
    throw new ConfigError(`adding attention to "${config.name}": ${problems.join("; ")}`);
  }
  const grown = structuredClone(config);
  for (const level of levels) {
    grown.unet.downBlockTypes[level] = "CrossAttnDownBlock2D";
    grown.unet.upBlockTypes[count - 1 - level] = "CrossAttnUpBlock2D";
  }
  grown.name = `${config.name}+attention${[...levels].sort((a, b) => a - b).join(",")}`;
  return grown;
}

/**
 * The same network at another image size (pixel space): `resolution` and `unet.sampleSize` replaced,
 * named `name@Npx`. Every weight of a UNet and text encoder is independent of the image size
 * (convolutions, and attention over however many positions there are), so a model trained at one size
 * loads unchanged and can be trained further at the other, as Stable Diffusion 2 went from 512 to
 * 768 px. The size must halve evenly once per level below the first.
 */
export function withResolution(config: DiffusionModelConfig, resolution: number): DiffusionModelConfig {
  if (config.space !== "pixel") {
    throw new ConfigError(
      `resizing "${config.name}": only pixel-space models train at another resolution (this one is ${config.space})`,
    );
  }
  const halvings = config.unet.blockOutChannels.length - 1;
  if (!Number.isSafeInteger(resolution) || resolution < 1 || resolution % 2 ** halvings !== 0) {
    throw new ConfigError(
      `resizing "${config.name}": resolution ${resolution} is not a positive multiple of ${2 ** halvings} (its UNet halves the image ${halvings} times)`,
    );
  }
  if (resolution === config.resolution) {
    throw new ConfigError(`resizing "${config.name}": it is already ${resolution} px`);
  }
  const resized = structuredClone(config);
  resized.resolution = resolution;
  resized.unet.sampleSize = resolution;
  resized.name = `${config.name.replace(/@\d+px$/, "")}@${resolution}px`;
  return resized;
}

/** Heads per level (diffusers' attention_head_dim, expanded). */
export function headsPerLevel(unet: UNetConfig): number[] {
  const levels = unet.blockOutChannels.length;
  return typeof unet.attentionHeadDim === "number"
    ? new Array<number>(levels).fill(unet.attentionHeadDim)
    : [...unet.attentionHeadDim];
}

const positiveInteger = (value: unknown) => typeof value === "number" && Number.isInteger(value) && value > 0;

/**
 * Checks a configuration (e.g. read from config.json) and returns every problem found, each naming
 * the key (`unet.blockOutChannels[1]`). Empty when the configuration can be built.
 */
export function configProblems(config: DiffusionModelConfig): string[] {
  const problems: string[] = [];
  const need = (ok: boolean, message: string) => {
    if (!ok) problems.push(message);
  };
  if (typeof config !== "object" || config === null) return ["config is not an object"];
  need(typeof config.name === "string", "name must be a string");
  need(positiveInteger(config.resolution), "resolution must be a positive integer");
  need(positiveInteger(config.channels), "channels must be a positive integer");
  const prediction = predictionProblem(config.prediction);
  if (prediction) problems.push(prediction);
  if (config.sampling !== undefined) {
    const { sampling } = config;
    if (typeof sampling !== "object" || sampling === null) problems.push("sampling must be an object");
    else {
      need(
        (SAMPLER_KINDS as readonly unknown[]).includes(sampling.sampler),
        `sampling.sampler must be one of ${SAMPLER_KINDS.join(", ")}, got ${JSON.stringify(sampling.sampler)}`,
      );
      need(
        positiveInteger(sampling.steps) && sampling.steps <= (config.schedule?.numTrainTimesteps ?? 1000),
        `sampling.steps must be an integer from 1 to the training timesteps, got ${JSON.stringify(sampling.steps)}`,
      );
    }
  }
  const text = config.textEncoder;
  if (typeof text !== "object" || text === null) {
    problems.push("textEncoder is missing");
  } else {
    for (const key of [
      "vocabSize",
      "hiddenSize",
      "intermediateSize",
      "numLayers",
      "numHeads",
      "maxPositions",
    ] as const) {
      need(positiveInteger(text[key]), `textEncoder.${key} must be a positive integer, got ${text[key]}`);
    }
    need(
      text.hiddenSize % text.numHeads === 0,
      `textEncoder.hiddenSize ${text.hiddenSize} is not divisible by numHeads ${text.numHeads}`,
    );
    need(text.maxPositions >= 2, "textEncoder.maxPositions must be at least 2 (start and end tokens)");
    need(
      text.hiddenAct === "quick_gelu" || text.hiddenAct === "gelu",
      `textEncoder.hiddenAct must be "quick_gelu" or "gelu", got ${JSON.stringify(text.hiddenAct)}`,
    );
    need(text.layerNormEps > 0, "textEncoder.layerNormEps must be positive");
  }
  const unet = config.unet;
  if (typeof unet !== "object" || unet === null) {
    problems.push("unet is missing");
    return problems;
  }
  for (const key of [
    "sampleSize",
    "inChannels",
    "outChannels",
    "layersPerBlock",
    "crossAttentionDim",
    "normNumGroups",
    "transformerLayersPerBlock",
  ] as const) {
    need(positiveInteger(unet[key]), `unet.${key} must be a positive integer, got ${unet[key]}`);
  }
  const levels = Array.isArray(unet.blockOutChannels) ? unet.blockOutChannels.length : 0;
  need(levels > 0, "unet.blockOutChannels must be a non-empty list");
  need(
    Array.isArray(unet.downBlockTypes) && unet.downBlockTypes.length === levels,
    `unet.downBlockTypes must have one entry per level (${levels})`,
  );
  need(
    Array.isArray(unet.upBlockTypes) && unet.upBlockTypes.length === levels,
    `unet.upBlockTypes must have one entry per level (${levels})`,
  );
  const heads = Array.isArray(unet.attentionHeadDim) ? unet.attentionHeadDim : null;
  need(
    heads === null ? positiveInteger(unet.attentionHeadDim) : heads.length === levels,
    `unet.attentionHeadDim must be a positive integer or one per level (${levels})`,
  );
  (unet.blockOutChannels ?? []).forEach((channels, level) => {
    need(positiveInteger(channels), `unet.blockOutChannels[${level}] must be a positive integer`);
    need(
      channels % unet.normNumGroups === 0,
      `unet.blockOutChannels[${level}] = ${channels} is not divisible by normNumGroups ${unet.normNumGroups}`,
    );
    const levelHeads = heads ? heads[level] : (unet.attentionHeadDim as number);
    need(
      positiveInteger(levelHeads) && channels % levelHeads === 0,
      `unet.blockOutChannels[${level}] = ${channels} is not divisible by its ${levelHeads} attention heads`,
    );
  });
  (unet.downBlockTypes ?? []).forEach((type, level) => {
    need(
      type === "DownBlock2D" || type === "CrossAttnDownBlock2D",
      `unet.downBlockTypes[${level}] "${type}" is not DownBlock2D or CrossAttnDownBlock2D`,
    );
  });
  (unet.upBlockTypes ?? []).forEach((type, level) => {
    need(
      type === "UpBlock2D" || type === "CrossAttnUpBlock2D",
      `unet.upBlockTypes[${level}] "${type}" is not UpBlock2D or CrossAttnUpBlock2D`,
    );
  });
  need(config.space === "pixel" || config.space === "latent", `space must be "pixel" or "latent"`);
  if (config.space === "pixel") {
    need(
      unet.inChannels === config.channels && unet.outChannels === config.channels,
      `pixel space: unet.inChannels ${unet.inChannels} and outChannels ${unet.outChannels} must equal channels ${config.channels}`,
    );
    need(
      unet.sampleSize === config.resolution,
      `pixel space: unet.sampleSize ${unet.sampleSize} must equal resolution ${config.resolution}`,
    );
  }
  if (text && typeof text === "object") {
    need(
      unet.crossAttentionDim === text.hiddenSize,
      `unet.crossAttentionDim ${unet.crossAttentionDim} != textEncoder.hiddenSize ${text.hiddenSize}`,
    );
  }
  need(
    unet.sampleSize % 2 ** (levels - 1) === 0,
    `unet.sampleSize ${unet.sampleSize} is not divisible by 2^${levels - 1} (one halving per level)`,
  );
  need(unet.normEps > 0, "unet.normEps must be positive");
  return problems;
}

export function checkConfig(config: DiffusionModelConfig, where = "config"): void {
  const problems = configProblems(config);
  if (problems.length > 0) throw new ConfigError(`${where} is invalid:\n  ${problems.join("\n  ")}`);
}
