/**
 * Writers for the published formats the pretrained tests read: safetensors with F32/F16/BF16/I64
 * tensors (our kernels' writer only writes F32/F16), sharded indexes and diffusers folders.
 */
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { float32ToFloat16Bits } from "@cxr/kernels";

export type FixtureDType = "F32" | "F16" | "BF16" | "I64";

export interface FixtureTensor {
  dtype: FixtureDType;
  shape: number[];
  values: ArrayLike<number>;
}

/** bfloat16 bits of a float32, rounded to nearest even. */
export function float32ToBfloat16Bits(value: number): number {
  const word = new Uint32Array(new Float32Array([value]).buffer)[0];
  return ((word + 0x7fff + ((word >>> 16) & 1)) >>> 16) & 0xffff;
}

export function bfloat16BitsToFloat32(bits: number): number {
  return new Float32Array(new Uint32Array([bits << 16]).buffer)[0];
}

function encode(tensor: FixtureTensor): Uint8Array {
  const count = tensor.values.length;
  switch (tensor.dtype) {
    case "F32":
      return new Uint8Array(Float32Array.from(tensor.values).buffer);
    case "F16":
      return new Uint8Array(Uint16Array.from(Array.from(tensor.values, float32ToFloat16Bits)).buffer);
    case "BF16":
      return new Uint8Array(Uint16Array.from(Array.from(tensor.values, float32ToBfloat16Bits)).buffer);
    case "I64": {
      const out = new BigInt64Array(count);
      for (let index = 0; index < count; index++) out[index] = BigInt(tensor.values[index]);
      return new Uint8Array(out.buffer);
    }
  }
}

/** Writes a safetensors file in the published layout (header padded to 8 bytes). */
export function writeFixtureSafetensors(path: string, tensors: Record<string, FixtureTensor>): void {
  const header: Record<string, unknown> = { __metadata__: { format: "pt" } };
  const payloads: Uint8Array[] = [];
  let offset = 0;
  for (const [name, tensor] of Object.entries(tensors)) {
    const bytes = encode(tensor);
    header[name] = {
      dtype: tensor.dtype,
      shape: tensor.shape,
      data_offsets: [offset, offset + bytes.byteLength],
    };
    payloads.push(bytes);
    offset += bytes.byteLength;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const headerBytes = new TextEncoder().encode(json);
  const length = new Uint8Array(8);
  new DataView(length.buffer).setBigUint64(0, BigInt(headerBytes.byteLength), true);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, Buffer.concat([length, headerBytes, ...payloads]));
}

/** Splits tensors over shards and writes `<stem>.safetensors.index.json` beside them. */
export function writeShardedFixture(
  directory: string,
  stem: string,
  shards: Record<string, FixtureTensor>[],
): string {
  const weightMap: Record<string, string> = {};
  shards.forEach((tensors, index) => {
    const file = `${stem}-${String(index + 1).padStart(5, "0")}-of-${String(shards.length).padStart(5, "0")}.safetensors`;
    writeFixtureSafetensors(join(directory, file), tensors);
    for (const name of Object.keys(tensors)) weightMap[name] = file;
  });
  const indexPath = join(directory, `${stem}.safetensors.index.json`);
  writeFileSync(indexPath, JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }, null, 2));
  return indexPath;
}

export function writeJson(path: string, value: unknown): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, JSON.stringify(value, null, 2));
}

export function temporaryFolder(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `cxr-${prefix}-`));
}

/** Stable Diffusion 2.1-base's model_index.json. */
export const SD21_MODEL_INDEX = {
  _class_name: "StableDiffusionPipeline",
  _diffusers_version: "0.10.0.dev0",
  feature_extractor: [null, null],
  requires_safety_checker: false,
  safety_checker: [null, null],
  scheduler: ["diffusers", "PNDMScheduler"],
  text_encoder: ["transformers", "CLIPTextModel"],
  tokenizer: ["transformers", "CLIPTokenizer"],
  unet: ["diffusers", "UNet2DConditionModel"],
  vae: ["diffusers", "AutoencoderKL"],
};

/** Stable Diffusion 2.1-base's unet/config.json. */
export const SD21_UNET_CONFIG = {
  _class_name: "UNet2DConditionModel",
  _diffusers_version: "0.10.0.dev0",
  act_fn: "silu",
  attention_head_dim: [5, 10, 20, 20],
  block_out_channels: [320, 640, 1280, 1280],
  center_input_sample: false,
  cross_attention_dim: 1024,
  down_block_types: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  downsample_padding: 1,
  dual_cross_attention: false,
  flip_sin_to_cos: true,
  freq_shift: 0,
  in_channels: 4,
  layers_per_block: 2,
  mid_block_scale_factor: 1,
  norm_eps: 1e-5,
  norm_num_groups: 32,
  num_class_embeds: null,
  only_cross_attention: false,
  out_channels: 4,
  sample_size: 64,
  up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  upcast_attention: false,
  use_linear_projection: true,
};

/** A vae/config.json shaped like Stable Diffusion 2.1-base's. */
export const SD21_VAE_CONFIG = {
  _class_name: "AutoencoderKL",
  _diffusers_version: "0.10.0.dev0",
  act_fn: "silu",
  block_out_channels: [128, 256, 512, 512],
  down_block_types: ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  in_channels: 3,
  latent_channels: 4,
  layers_per_block: 2,
  norm_num_groups: 32,
  out_channels: 3,
  sample_size: 768,
  up_block_types: ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
};

/** Stable Diffusion 2.1-base's text_encoder/config.json (the keys that matter). */
export const SD21_TEXT_ENCODER_CONFIG = {
  architectures: ["CLIPTextModel"],
  attention_dropout: 0.0,
  bos_token_id: 0,
  dropout: 0.0,
  eos_token_id: 2,
  hidden_act: "gelu",
  hidden_size: 1024,
  initializer_factor: 1.0,
  initializer_range: 0.02,
  intermediate_size: 4096,
  layer_norm_eps: 1e-5,
  max_position_embeddings: 77,
  model_type: "clip_text_model",
  num_attention_heads: 16,
  num_hidden_layers: 23,
  pad_token_id: 1,
  projection_dim: 512,
  torch_dtype: "float32",
  vocab_size: 49408,
};

/** Stable Diffusion 2.1-base's scheduler/scheduler_config.json. */
export const SD21_SCHEDULER_CONFIG = {
  _class_name: "PNDMScheduler",
  _diffusers_version: "0.10.0.dev0",
  beta_end: 0.012,
  beta_schedule: "scaled_linear",
  beta_start: 0.00085,
  clip_sample: false,
  num_train_timesteps: 1000,
  prediction_type: "epsilon",
  set_alpha_to_one: false,
  skip_prk_steps: true,
  steps_offset: 1,
  trained_betas: null,
};

/** Writes an SD 2.1-shaped folder of configs (no weights) and returns its path. */
export function writeSd21Configs(root: string): string {
  writeJson(join(root, "model_index.json"), SD21_MODEL_INDEX);
  writeJson(join(root, "unet", "config.json"), SD21_UNET_CONFIG);
  writeJson(join(root, "vae", "config.json"), SD21_VAE_CONFIG);
  writeJson(join(root, "text_encoder", "config.json"), SD21_TEXT_ENCODER_CONFIG);
  writeJson(join(root, "scheduler", "scheduler_config.json"), SD21_SCHEDULER_CONFIG);
  writeJson(join(root, "tokenizer", "vocab.json"), { "a</w>": 0, "<|startoftext|>": 1, "<|endoftext|>": 2 });
  writeFileSync(join(root, "tokenizer", "merges.txt"), "#version: 0.2\n");
  return root;
}
