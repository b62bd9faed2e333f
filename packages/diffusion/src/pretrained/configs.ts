/**
 * zod schemas of the JSON files in a diffusers Stable Diffusion folder (model_index.json and each
 * component's config), restricted to what our kernels implement, so that anything else is refused
 * with the file, the key and the value rather than producing a wrong model. Unknown extra keys are
 * kept (diffusers adds keys between versions) but every key that changes the computation is checked.
 */
import * as z from "zod";

export const SUPPORTED_DOWN_BLOCKS = ["CrossAttnDownBlock2D", "DownBlock2D"] as const;
export const SUPPORTED_UP_BLOCKS = ["CrossAttnUpBlock2D", "UpBlock2D"] as const;
export const SUPPORTED_MID_BLOCKS = ["UNetMidBlock2DCrossAttn"] as const;
export const SUPPORTED_SCHEDULERS = [
  "PNDMScheduler",
  "DDIMScheduler",
  "DDPMScheduler",
  "DPMSolverMultistepScheduler",
] as const;

const positiveInt = z.number().int().positive();
const intOrList = z.union([positiveInt, z.array(positiveInt).min(1)]);

/** model_index.json: `_class_name` plus component -> [library, class] (or [null, null] when absent). */
export const modelIndexSchema = z.looseObject({
  _class_name: z.string(),
  _diffusers_version: z.string().optional(),
  // Each component is optional here; PretrainedFolder.open says which ones a use needs.
  unet: z.tuple([z.literal("diffusers"), z.literal("UNet2DConditionModel")]).optional(),
  vae: z.tuple([z.literal("diffusers"), z.literal("AutoencoderKL")]).optional(),
  text_encoder: z.tuple([z.literal("transformers"), z.literal("CLIPTextModel")]).optional(),
  tokenizer: z.tuple([z.literal("transformers"), z.enum(["CLIPTokenizer", "CLIPTokenizerFast"])]).optional(),
  scheduler: z.tuple([z.literal("diffusers"), z.enum(SUPPORTED_SCHEDULERS)]).optional(),
});
export type ModelIndex = z.infer<typeof modelIndexSchema>;

/** The components a text-to-image folder needs, each a subfolder of the same name. */
export const REQUIRED_COMPONENTS = ["unet", "vae", "text_encoder", "tokenizer", "scheduler"] as const;
export type ComponentName = (typeof REQUIRED_COMPONENTS)[number];

/** vae/config.json of diffusers' AutoencoderKL (SD 1.x / 2.x). */
export const vaeConfigSchema = z.looseObject({
  _class_name: z.literal("AutoencoderKL").optional(),
  in_channels: positiveInt.default(3),
  out_channels: positiveInt.default(3),
  down_block_types: z.array(z.literal("DownEncoderBlock2D")).min(1),
  up_block_types: z.array(z.literal("UpDecoderBlock2D")).min(1),
  block_out_channels: z.array(positiveInt).min(1),
  layers_per_block: positiveInt.default(1),
  act_fn: z.literal("silu").default("silu"),
  latent_channels: positiveInt.default(4),
  norm_num_groups: positiveInt.default(32),
  sample_size: positiveInt.default(32),
  scaling_factor: z.number().positive().default(0.18215),
  shift_factor: z.null().optional(),
  latents_mean: z.null().optional(),
  latents_std: z.null().optional(),
  force_upcast: z.boolean().optional(),
  mid_block_add_attention: z.boolean().default(true),
  use_quant_conv: z.literal(true).default(true),
  use_post_quant_conv: z.literal(true).default(true),
});
export type VaeJsonConfig = z.infer<typeof vaeConfigSchema>;

/** unet/config.json of diffusers' UNet2DConditionModel as Stable Diffusion 1.x / 2.x uses it. */
export const unetConfigSchema = z.looseObject({
  _class_name: z.literal("UNet2DConditionModel").optional(),
  sample_size: positiveInt.default(64),
  in_channels: positiveInt.default(4),
  out_channels: positiveInt.default(4),
  center_input_sample: z.literal(false).default(false),
  flip_sin_to_cos: z.boolean().default(true),
  freq_shift: z.number().int().default(0),
  down_block_types: z.array(z.enum(SUPPORTED_DOWN_BLOCKS)).min(1),
  mid_block_type: z.enum(SUPPORTED_MID_BLOCKS).default("UNetMidBlock2DCrossAttn"),
  up_block_types: z.array(z.enum(SUPPORTED_UP_BLOCKS)).min(1),
  only_cross_attention: z.union([z.literal(false), z.array(z.literal(false))]).default(false),
  block_out_channels: z.array(positiveInt).min(1),
  layers_per_block: intOrList.default(2),
  downsample_padding: z.number().int().nonnegative().default(1),
  mid_block_scale_factor: z.number().default(1),
  act_fn: z.literal("silu").default("silu"),
  norm_num_groups: positiveInt.default(32),
  norm_eps: z.number().positive().default(1e-5),
  cross_attention_dim: positiveInt.default(1280),
  transformer_layers_per_block: intOrList.default(1),
  attention_head_dim: intOrList.default(8),
  num_attention_heads: intOrList.nullable().optional(),
  dual_cross_attention: z.literal(false).default(false),
  use_linear_projection: z.boolean().default(false),
  class_embed_type: z.null().optional(),
  addition_embed_type: z.null().optional(),
  num_class_embeds: z.null().optional(),
  upcast_attention: z.boolean().default(false),
  resnet_time_scale_shift: z.literal("default").default("default"),
  time_embedding_type: z.literal("positional").default("positional"),
  conv_in_kernel: z.literal(3).default(3),
  conv_out_kernel: z.literal(3).default(3),
});
export type UnetJsonConfig = z.infer<typeof unetConfigSchema>;

/** text_encoder/config.json of transformers' CLIPTextModel (SD 1.x: ViT-L/14, SD 2.x: OpenCLIP ViT-H/14). */
export const textEncoderConfigSchema = z.looseObject({
  architectures: z.array(z.literal("CLIPTextModel")).optional(),
  vocab_size: positiveInt.default(49408),
  hidden_size: positiveInt.default(512),
  intermediate_size: positiveInt.default(2048),
  num_hidden_layers: positiveInt.default(12),
  num_attention_heads: positiveInt.default(8),
  max_position_embeddings: positiveInt.default(77),
  hidden_act: z.enum(["gelu", "quick_gelu"]).default("quick_gelu"),
  layer_norm_eps: z.number().positive().default(1e-5),
  projection_dim: positiveInt.optional(),
  bos_token_id: z.number().int().optional(),
  eos_token_id: z.number().int().optional(),
  pad_token_id: z.number().int().optional(),
  torch_dtype: z.string().optional(),
});
export type TextEncoderJsonConfig = z.infer<typeof textEncoderConfigSchema>;

/** scheduler/scheduler_config.json (the keys our samplers read). */
export const schedulerConfigSchema = z.looseObject({
  _class_name: z.enum(SUPPORTED_SCHEDULERS),
  num_train_timesteps: positiveInt.default(1000),
  beta_start: z.number().positive().default(0.0001),
  beta_end: z.number().positive().default(0.02),
  beta_schedule: z.enum(["linear", "scaled_linear", "squaredcos_cap_v2"]).default("linear"),
  trained_betas: z.null().optional(),
  prediction_type: z.enum(["epsilon", "v_prediction", "sample"]).default("epsilon"),
  timestep_spacing: z.enum(["leading", "trailing", "linspace"]).default("leading"),
  steps_offset: z.number().int().nonnegative().default(0),
  set_alpha_to_one: z.boolean().default(false),
  skip_prk_steps: z.boolean().default(false),
  clip_sample: z.boolean().default(false),
  clip_sample_range: z.number().positive().default(1),
});
export type SchedulerJsonConfig = z.infer<typeof schedulerConfigSchema>;

/** tokenizer/tokenizer_config.json (the keys the CLIP tokenizer reads). */
export const tokenizerConfigSchema = z.looseObject({
  model_max_length: positiveInt.default(77),
  do_lower_case: z.boolean().default(true),
  bos_token: z.union([z.string(), z.looseObject({ content: z.string() })]).optional(),
  eos_token: z.union([z.string(), z.looseObject({ content: z.string() })]).optional(),
  pad_token: z.union([z.string(), z.looseObject({ content: z.string() })]).optional(),
  unk_token: z.union([z.string(), z.looseObject({ content: z.string() })]).optional(),
});
export type TokenizerJsonConfig = z.infer<typeof tokenizerConfigSchema>;

/** tokenizer/special_tokens_map.json. */
export const specialTokensSchema = tokenizerConfigSchema.pick({
  bos_token: true,
  eos_token: true,
  pad_token: true,
  unk_token: true,
});
