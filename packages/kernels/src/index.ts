/**
 * The public API of @cxr/kernels, by name. WGSL sources, cost models, scratch pools, the uniform
 * arena and other internals stay in their modules (tests that need one import it by file path).
 * A new op file adds its public names here.
 */

export type { ModelBenchCase, ModelBenchCases, ModelBenchSize, ModelBenchStep } from "./bench/models.ts";
// Layers, modules, checkpoints.
export {
  Attention,
  type AttentionOptions,
  BatchNorm2d,
  Conv2d,
  type Conv2dLayerOptions,
  Embedding,
  GroupNorm,
  LayerNorm,
  Linear,
} from "./nn/layers.ts";
export { Module, ModuleError, ModuleList, ParameterInit, withParameterDtype } from "./nn/module.ts";
export {
  readSafetensors,
  type SafetensorsDType,
  SafetensorsError,
  type SafetensorsFile,
  type StoredTensor,
  type TensorToWrite,
  writeSafetensors,
} from "./nn/safetensors.ts";
// Ops, each with its float64 reference; variant lists and choosers where an op has variants.
export {
  ATTENTION_VARIANTS,
  type AttentionComposedOptions,
  type AttentionReferenceOptions,
  type AttentionShape,
  type AttentionVariant,
  attention,
  attentionCanUseSubgroups,
  attentionComposed,
  attentionReference,
  chooseAttentionVariant,
  MAX_ATTENTION_HEAD_DIM,
} from "./ops/attention/index.ts";
export {
  type BatchNormOptions,
  type BatchNormReferenceState,
  type BatchNormVariant,
  batchNorm2d,
  batchNormReference,
  chooseBatchNormVariant,
} from "./ops/batchnorm/index.ts";
export { add, type BinaryKind, binary, binaryReference, div, mul, sub } from "./ops/binary/index.ts";
export { cast, roundAllToHalf, roundToHalf } from "./ops/cast/index.ts";
export {
  CONV2D_VARIANTS,
  type Conv2dGeometry,
  type Conv2dOptions,
  type Conv2dVariant,
  chooseConv2dVariant,
  conv2d,
  conv2dBackwardBias,
  conv2dBackwardInput,
  conv2dBackwardWeight,
  conv2dCost,
  conv2dGeometry,
  conv2dOutputShape,
  conv2dReference,
  releaseConv2dScratch,
} from "./ops/conv2d/index.ts";
export { softmaxCrossEntropy, softmaxCrossEntropyReference } from "./ops/crossentropy/index.ts";
export { embedding, embeddingReference, uploadTokens } from "./ops/embedding/index.ts";
export {
  chooseGroupNormVariant,
  type GroupNormVariant,
  groupNorm,
  groupNormReference,
} from "./ops/groupnorm/index.ts";
export { conv2dIm2col, im2col, im2colReference, type WindowOptions } from "./ops/im2col/index.ts";
export {
  chooseLayerNormVariant,
  type LayerNormVariant,
  layerNorm,
  layerNormReference,
} from "./ops/layernorm/index.ts";
export { concat, layoutReference, permute, reshape, split, upsampleNearest } from "./ops/layout/index.ts";
export {
  bceWithLogitsLoss,
  bceWithLogitsReference,
  type LossReduction,
  mseLoss,
  mseLossReference,
} from "./ops/loss/index.ts";
export {
  chooseMatmulVariant,
  MATMUL_ACTIVATIONS,
  MATMUL_VARIANTS,
  type MatmulActivation,
  type MatmulOptions,
  type MatmulPlan,
  type MatmulReferenceOptions,
  type MatmulShape,
  type MatmulVariant,
  matmul,
  matmulCost,
  matmulReference,
  releaseMatmulScratch,
  resolveMatmulShapes,
} from "./ops/matmul/index.ts";
export {
  ADAMW_DEFAULTS,
  AdamW,
  type AdamWConfig,
  adamwReference,
  COSINE_SCHEDULE_DEFAULTS,
  type CosineScheduleConfig,
  chooseElementwiseVariant,
  clipGradNorm,
  clipGradNormReference,
  cosineLearningRate,
  type ElementwiseVariant,
  EMA_DEFAULTS,
  Ema,
  type EmaConfig,
  emaDecay,
  emaReference,
} from "./ops/optim/index.ts";
export {
  avgPool2d,
  globalAvgPool2d,
  maxPool2d,
  type Pool2dOptions,
  poolReference,
} from "./ops/pooling/index.ts";
export {
  Generator,
  mulhilo32,
  philox4x32,
  randomNormal,
  randomReference,
  randomUniform,
} from "./ops/random/index.ts";
export {
  max,
  mean,
  type ReduceOptions,
  type ReductionKind,
  reduce,
  reduceReference,
  sum,
  sumToShape,
} from "./ops/reduce/index.ts";
export {
  chooseSoftmaxVariant,
  SOFTMAX_VARIANTS,
  type SoftmaxOptions,
  type SoftmaxVariant,
  softmax,
  softmaxReference,
} from "./ops/softmax/index.ts";
export {
  type TimestepEmbeddingOptions,
  timestepEmbedding,
  timestepEmbeddingReference,
  timestepFrequencies,
} from "./ops/timestep/index.ts";
export {
  gelu,
  referenceErf,
  relu,
  scale,
  sigmoidOp,
  silu,
  tanh,
  UNARY_FUNCTIONS,
  type UnaryKind,
  unary,
  unaryReference,
} from "./ops/unary/index.ts";
// Autograd.
export {
  type BackwardFn,
  backward,
  type CheckpointPass,
  checkpoint,
  isGradEnabled,
  needsGrad,
  noGrad,
  record,
  type TapeNode,
} from "./runtime/autograd.ts";
// Device: adapter choice, features, limits, waiting, Dawn's warnings.
export {
  type AdapterDescription,
  type AdapterKind,
  classifyAdapter,
  createGpu,
  DEFAULT_DRAIN_EVERY,
  type DeviceOptions,
  defaultGpu,
  Gpu,
  GpuUnavailableError,
  INSTALL_HINT,
  OPTIONAL_FEATURES,
  type OptionalFeature,
} from "./runtime/device.ts";
// Writing a kernel outside this package (e.g. the diffusion schedules): launch, grid, templates.
export { grid, type KernelSource, type Launch, LINEAR_INDEX_WGSL, launch, wgsl } from "./runtime/kernel.ts";
export { type PoolStats, sizeClass } from "./runtime/pool.ts";
// Profiler.
export { formatProfile, type KernelRecord, type ProfileRow, type Profiler } from "./runtime/profiler.ts";
// Tensors.
export {
  type DType,
  float16BitsToFloat32,
  float32ToFloat16Bits,
  formatShape,
  OpError,
  type Shape,
  sizeOf,
  Tensor,
  tidy,
} from "./runtime/tensor.ts";
export { Params } from "./runtime/uniforms.ts";
export {
  parseWaitMode,
  WAIT_MODES,
  type WaitMode,
  type WaitPolicy,
  type WaitStats,
  waitStats,
} from "./runtime/wait.ts";
