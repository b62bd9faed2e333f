/**
 * DenseNet-BC (Huang et al. 2017) as torchvision builds it, with torchvision's parameter names, so a
 * published DenseNet-121 state dict (ImageNet, or CheXpert-trained such as torchxrayvision's) loads by
 * name once converted to safetensors (`scripts/convert_densenet.py`):
 *
 *   features.conv0 (7x7/2) -> norm0 -> relu0 -> pool0 (max 3x3/2)
 *   -> denseblock{b}.denselayer{l}: norm1 -> relu1 -> conv1 (1x1, bottleneck x growth)
 *                                   -> norm2 -> relu2 -> conv2 (3x3, growth), concatenated
 *   -> transition{b}: norm -> relu -> conv (1x1, compression) -> pool (avg 2x2/2)
 *   -> norm5 -> relu -> global average pool -> classifier (one logit per CheXpert label)
 *
 * Optional attribute heads (sex: 1 logit, age: 1 value in years, race: 4 logits) read the same
 * pooled features; their names (`sex_head`, `age_head`, `race_head`) are ours, since torchvision has
 * none.
 */
import {
  avgPool2d,
  batchNorm2d,
  checkpoint,
  concat,
  conv2d,
  type Gpu,
  globalAvgPool2d,
  Module,
  matmul,
  maxPool2d,
  ParameterInit,
  relu,
  type Tensor,
} from "@cxr/kernels";

export interface DenseNetStem {
  /** conv0's kernel (7 in DenseNet-121), stride and padding. */
  kernel: number;
  stride: number;
  padding: number;
  /** Max-pool 3x3/2 (pad 1) after the stem, as DenseNet-121 does. */
  pool: boolean;
}

export interface AttributeHeads {
  sex: boolean;
  age: boolean;
  race: boolean;
}

export const NO_ATTRIBUTE_HEADS: AttributeHeads = { sex: false, age: false, race: false };

export interface DenseNetConfig {
  /** Name in `DENSENET_CONFIGS`, or "custom". */
  name: string;
  growthRate: number;
  /** Dense layers per block: [6, 12, 24, 16] for DenseNet-121. */
  blockConfig: number[];
  numInitFeatures: number;
  /** Bottleneck width as a multiple of the growth rate (4). */
  bnSize: number;
  /** Fraction of channels a transition keeps (0.5; torchvision floors num_features / 2). */
  compression: number;
  stem: DenseNetStem;
  /** 1 for radiographs (torchxrayvision's DenseNet); 3 for ImageNet weights as published. */
  inChannels: number;
  /** Finding logits (14 CheXpert labels). */
  labels: number;
  attributes: AttributeHeads;
  seed: number;
  /** Image side the config is meant for (training default; the network accepts others). */
  imageSize: number;
  /**
   * Memory-efficient dense blocks (torchvision's `memory_efficient`, Pleiss et al. 2017): each dense
   * layer's concatenation + norm1 + relu1 + conv1 is checkpointed (recomputed in backward), so only
   * the block input, the layers' new features and their bottlenecks stay alive for backward instead
   * of one concatenation, normalised copy and ReLU copy per layer (quadratic in the block depth).
   * Same results as the plain path; costs one more run of that part per layer in backward. Absent
   * (older model.json files) means false.
   */
  memoryEfficient?: boolean;
}

const IMAGENET_STEM: DenseNetStem = { kernel: 7, stride: 2, padding: 3, pool: true };

export const DENSENET_CONFIGS = {
  /** DenseNet-121 exactly as torchvision's `densenet121` (with one input channel for radiographs). */
  densenet121: {
    name: "densenet121",
    growthRate: 32,
    blockConfig: [6, 12, 24, 16],
    numInitFeatures: 64,
    bnSize: 4,
    compression: 0.5,
    stem: IMAGENET_STEM,
    inChannels: 1,
    labels: 14,
    attributes: NO_ATTRIBUTE_HEADS,
    seed: 0,
    imageSize: 224,
  },
  /**
   * DenseNet-BC for 64-128 px phantom runs: growth 12, three blocks, a 3x3/2 stem with max-pool (at
   * 64 px the blocks run at 16, 8 and 4 px, the resolutions DenseNet-121 reaches at 256 px in its
   * last three blocks), small enough to train on a CPU adapter.
   */
  "densenet-bc-phantom": {
    name: "densenet-bc-phantom",
    growthRate: 12,
    blockConfig: [3, 6, 8],
    numInitFeatures: 24,
    bnSize: 4,
    compression: 0.5,
    stem: { kernel: 3, stride: 2, padding: 1, pool: true },
    inChannels: 1,
    labels: 14,
    attributes: NO_ATTRIBUTE_HEADS,
    seed: 0,
    imageSize: 64,
  },
  /** The smallest DenseNet-BC that still has every part (tests, smoke runs). */
  "densenet-bc-tiny": {
    name: "densenet-bc-tiny",
    growthRate: 4,
    blockConfig: [2, 2],
    numInitFeatures: 8,
    bnSize: 2,
    compression: 0.5,
    stem: { kernel: 3, stride: 2, padding: 1, pool: true },
    inChannels: 1,
    labels: 14,
    attributes: NO_ATTRIBUTE_HEADS,
    seed: 0,
    imageSize: 32,
  },
} as const satisfies Record<string, DenseNetConfig>;

export type DenseNetConfigName = keyof typeof DENSENET_CONFIGS;

export function denseNetConfig(name: string, overrides: Partial<DenseNetConfig> = {}): DenseNetConfig {
  const base = (DENSENET_CONFIGS as Record<string, DenseNetConfig>)[name];
  if (!base) {
    throw new Error(
      `unknown DenseNet config "${name}" (choose from ${Object.keys(DENSENET_CONFIGS).join(", ")})`,
    );
  }
  return {
    ...base,
    blockConfig: [...base.blockConfig],
    stem: { ...base.stem },
    attributes: { ...base.attributes },
    ...overrides,
  };
}

/** Race classes of the race head, in logit order. */
export const RACE_CLASSES = ["WHITE", "BLACK", "ASIAN", "HISPANIC"] as const;

/** torchvision's init: convolutions kaiming_normal_ (fan in, gain sqrt 2); no bias. */
class Conv extends Module {
  readonly weight: Tensor;
  constructor(
    gpu: Gpu,
    inChannels: number,
    outChannels: number,
    readonly kernel: number,
    init: ParameterInit,
    readonly stride = 1,
    readonly padding = 0,
  ) {
    super(gpu);
    const fanIn = inChannels * kernel * kernel;
    this.weight = this.parameter(
      "weight",
      [outChannels, inChannels, kernel, kernel],
      init.normal(outChannels * fanIn, Math.sqrt(2 / fanIn)),
    );
  }
  forward(x: Tensor): Tensor {
    return conv2d(x, this.weight, null, { stride: this.stride, padding: this.padding });
  }
}

/** torchvision's BatchNorm2d init: weight 1, bias 0, running mean 0, running var 1. */
class Norm extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor;
  readonly runningMean: Tensor;
  readonly runningVar: Tensor;
  constructor(
    gpu: Gpu,
    readonly channels: number,
  ) {
    super(gpu);
    this.weight = this.parameter("weight", [channels], new Float32Array(channels).fill(1));
    this.bias = this.parameter("bias", [channels], new Float32Array(channels));
    this.runningMean = this.buffer("running_mean", [channels], new Float32Array(channels));
    this.runningVar = this.buffer("running_var", [channels], new Float32Array(channels).fill(1));
  }
  /**
   * `recomputing`: a checkpoint's second run inside backward. It normalises with the same batch
   * statistics but must not fold them into the running buffers again; momentum 0 leaves them
   * bit-identical (running = 1 * running + 0 * batch).
   */
  forward(x: Tensor, recomputing = false): Tensor {
    return batchNorm2d(x, this.weight, this.bias, this.runningMean, this.runningVar, {
      training: this.training,
      momentum: recomputing ? 0 : 0.1,
      eps: 1e-5,
    });
  }
}

/** nn.Linear with PyTorch's default weight init and torchvision's zero bias. */
class Head extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor;
  constructor(gpu: Gpu, inFeatures: number, outFeatures: number, init: ParameterInit) {
    super(gpu);
    const bound = 1 / Math.sqrt(inFeatures);
    this.weight = this.parameter(
      "weight",
      [outFeatures, inFeatures],
      init.uniform(outFeatures * inFeatures, bound),
    );
    this.bias = this.parameter("bias", [outFeatures], new Float32Array(outFeatures));
  }
  forward(x: Tensor): Tensor {
    return matmul(x, this.weight, { transposeB: true, bias: this.bias });
  }
}

class DenseLayer extends Module {
  readonly norm1: Norm;
  readonly conv1: Conv;
  readonly norm2: Norm;
  readonly conv2: Conv;
  constructor(gpu: Gpu, inChannels: number, growthRate: number, bnSize: number, init: ParameterInit) {
    super(gpu);
    const bottleneck = bnSize * growthRate;
    this.norm1 = this.child("norm1", new Norm(gpu, inChannels));
    this.conv1 = this.child("conv1", new Conv(gpu, inChannels, bottleneck, 1, init));
    this.norm2 = this.child("norm2", new Norm(gpu, bottleneck));
    this.conv2 = this.child("conv2", new Conv(gpu, bottleneck, growthRate, 3, init, 1, 1));
  }
  /** features: the block input and every earlier layer's output, concatenated on channels. */
  forward(features: Tensor): Tensor {
    const bottleneck = this.conv1.forward(relu(this.norm1.forward(features)));
    return this.conv2.forward(relu(this.norm2.forward(bottleneck)));
  }

  /**
   * The same layer on the block input and earlier outputs as separate pieces: concatenation, norm1,
   * relu1 and conv1 run as one checkpoint, so their intermediates are not kept for backward but
   * recomputed there (torchvision's `_DenseLayer.call_checkpoint_bottleneck`).
   */
  forwardPieces(pieces: Tensor[]): Tensor {
    const bottleneck = checkpoint(
      (inputs, { recomputing }) => {
        const features = inputs.length === 1 ? inputs[0] : concat(inputs, 1);
        return this.conv1.forward(relu(this.norm1.forward(features, recomputing)));
      },
      pieces,
      [this.norm1.weight, this.norm1.bias, this.conv1.weight].filter((tensor) => tensor.requiresGrad),
    );
    return this.conv2.forward(relu(this.norm2.forward(bottleneck)));
  }
}

export class DenseBlock extends Module {
  readonly layers: DenseLayer[] = [];
  readonly outChannels: number;
  constructor(
    gpu: Gpu,
    layers: number,
    inChannels: number,
    growthRate: number,
    bnSize: number,
    init: ParameterInit,
    readonly memoryEfficient = false,
  ) {
    super(gpu);
    for (let index = 0; index < layers; index++) {
      const layer = new DenseLayer(gpu, inChannels + index * growthRate, growthRate, bnSize, init);
      this.layers.push(this.child(`denselayer${index + 1}`, layer));
    }
    this.outChannels = inChannels + layers * growthRate;
  }
  forward(x: Tensor): Tensor {
    if (this.memoryEfficient) {
      const pieces = [x];
      // A copy of the list per layer: the checkpoint keeps its inputs for the recomputation.
      for (const layer of this.layers) pieces.push(layer.forwardPieces([...pieces]));
      return pieces.length === 1 ? x : concat(pieces, 1);
    }
    let features = x;
    for (const layer of this.layers) {
      const grown = layer.forward(features);
      features = concat([features, grown], 1);
    }
    return features;
  }
}

class Transition extends Module {
  readonly norm: Norm;
  readonly conv: Conv;
  constructor(gpu: Gpu, inChannels: number, outChannels: number, init: ParameterInit) {
    super(gpu);
    this.norm = this.child("norm", new Norm(gpu, inChannels));
    this.conv = this.child("conv", new Conv(gpu, inChannels, outChannels, 1, init));
  }
  forward(x: Tensor): Tensor {
    return avgPool2d(this.conv.forward(relu(this.norm.forward(x))), { kernel: 2, stride: 2 });
  }
}

/** torchvision's `features` Sequential: children named conv0, norm0, denseblock1, transition1, ... */
class Features extends Module {
  readonly conv0: Conv;
  readonly norm0: Norm;
  readonly stages: (DenseBlock | Transition)[] = [];
  readonly norm5: Norm;
  readonly outChannels: number;
  constructor(
    gpu: Gpu,
    private readonly config: DenseNetConfig,
    init: ParameterInit,
  ) {
    super(gpu);
    const { stem, numInitFeatures, growthRate, bnSize, blockConfig } = config;
    this.conv0 = this.child(
      "conv0",
      new Conv(gpu, config.inChannels, numInitFeatures, stem.kernel, init, stem.stride, stem.padding),
    );
    this.norm0 = this.child("norm0", new Norm(gpu, numInitFeatures));
    let channels = numInitFeatures;
    blockConfig.forEach((layers, index) => {
      const block = new DenseBlock(
        gpu,
        layers,
        channels,
        growthRate,
        bnSize,
        init,
        config.memoryEfficient ?? false,
      );
      this.stages.push(this.child(`denseblock${index + 1}`, block));
      channels = block.outChannels;
      if (index !== blockConfig.length - 1) {
        const kept = Math.floor(channels * config.compression);
        this.stages.push(this.child(`transition${index + 1}`, new Transition(gpu, channels, kept, init)));
        channels = kept;
      }
    });
    this.norm5 = this.child("norm5", new Norm(gpu, channels));
    this.outChannels = channels;
  }
  forward(images: Tensor): Tensor {
    let x = relu(this.norm0.forward(this.conv0.forward(images)));
    if (this.config.stem.pool) x = maxPool2d(x, { kernel: 3, stride: 2, padding: 1 });
    for (const stage of this.stages) x = stage.forward(x);
    return this.norm5.forward(x);
  }
}

export interface DenseNetOutputs {
  /** [N, labels] finding logits. */
  findings: Tensor;
  /** [N, 1] sex logit (1 = male), when the head exists. */
  sex: Tensor | null;
  /** [N, 1] age in years, when the head exists. */
  age: Tensor | null;
  /** [N, 4] race logits in `RACE_CLASSES` order, when the head exists. */
  race: Tensor | null;
}

/** Scale of the age head's output: it predicts years / AGE_SCALE, reported in years. */
export const AGE_SCALE = 100;

export class DenseNet extends Module {
  readonly features: Features;
  readonly classifier: Head;
  readonly sexHead: Head | null;
  readonly ageHead: Head | null;
  readonly raceHead: Head | null;
  readonly config: DenseNetConfig;

  constructor(gpu: Gpu, config: DenseNetConfig = denseNetConfig("densenet121")) {
    super(gpu);
    validateConfig(config);
    this.config = config;
    const init = new ParameterInit(config.seed);
    this.features = this.child("features", new Features(gpu, config, init));
    const width = this.features.outChannels;
    this.classifier = this.child("classifier", new Head(gpu, width, config.labels, init));
    const { attributes } = config;
    this.sexHead = attributes.sex ? this.child("sex_head", new Head(gpu, width, 1, init)) : null;
    this.ageHead = attributes.age ? this.child("age_head", new Head(gpu, width, 1, init)) : null;
    this.raceHead = attributes.race
      ? this.child("race_head", new Head(gpu, width, RACE_CLASSES.length, init))
      : null;
  }

  /** Width of the pooled feature vector (1024 for DenseNet-121). */
  get featureWidth(): number {
    return this.features.outChannels;
  }

  /** images [N, inChannels, S, S] -> pooled features [N, featureWidth]. */
  pooledFeatures(images: Tensor): Tensor {
    return globalAvgPool2d(relu(this.features.forward(images)));
  }

  /** images -> finding logits [N, labels] (the SmallCnn-compatible entry point). */
  forward(images: Tensor): Tensor {
    return this.classifier.forward(this.pooledFeatures(images));
  }

  /** Finding logits and every attribute head's output, from one pass through the features. */
  forwardAll(images: Tensor): DenseNetOutputs {
    const pooled = this.pooledFeatures(images);
    return {
      findings: this.classifier.forward(pooled),
      sex: this.sexHead?.forward(pooled) ?? null,
      age: this.ageHead?.forward(pooled) ?? null,
      race: this.raceHead?.forward(pooled) ?? null,
    };
  }
}

function validateConfig(config: DenseNetConfig): void {
  const problems: string[] = [];
  const positive = (name: string, value: number) => {
    if (!Number.isInteger(value) || value < 1)
      problems.push(`${name} must be a positive integer, got ${value}`);
  };
  positive("growthRate", config.growthRate);
  positive("numInitFeatures", config.numInitFeatures);
  positive("bnSize", config.bnSize);
  positive("inChannels", config.inChannels);
  positive("labels", config.labels);
  positive("stem.kernel", config.stem.kernel);
  positive("stem.stride", config.stem.stride);
  if (config.blockConfig.length === 0) problems.push("blockConfig needs at least one block");
  for (const [index, layers] of config.blockConfig.entries()) positive(`blockConfig[${index}]`, layers);
  if (config.memoryEfficient !== undefined && typeof config.memoryEfficient !== "boolean")
    problems.push(`memoryEfficient must be true or false, got ${String(config.memoryEfficient)}`);
  if (!(config.compression > 0 && config.compression <= 1))
    problems.push(`compression must be in (0, 1], got ${config.compression}`);
  if (problems.length > 0) throw new Error(`DenseNet config "${config.name}": ${problems.join("; ")}`);
}

/**
 * The smallest input side the network can take: every stride-2 stage must leave at least one pixel
 * (DenseNet-121: 32 px reaches block 4 at 1x1).
 */
export function minimumImageSize(config: DenseNetConfig): number {
  for (let size = 1; size <= 4096; size++) {
    let side = Math.floor((size + 2 * config.stem.padding - config.stem.kernel) / config.stem.stride) + 1;
    if (side < 1) continue;
    if (config.stem.pool) side = Math.floor((side + 2 - 3) / 2) + 1;
    let fits = side >= 1;
    for (let block = 0; block < config.blockConfig.length - 1 && fits; block++) {
      side = Math.floor(side / 2);
      fits = side >= 1;
    }
    if (fits) return size;
  }
  throw new Error(`DenseNet config "${config.name}" does not fit any image up to 4096 px`);
}
