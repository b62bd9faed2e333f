/**
 * A small convolutional classifier for 64-128 px radiographs: the built-in default until the
 * DenseNet-121 of the study lands (a later issue), and a model quick enough to train on a CPU
 * adapter. Conv-BN-ReLU stages halve the resolution, then global average pooling and a linear
 * multi-label head (one logit per CheXpert label).
 */
import {
  BatchNorm2d,
  Conv2d,
  type Gpu,
  globalAvgPool2d,
  Linear,
  Module,
  ModuleList,
  ParameterInit,
  relu,
  type Tensor,
} from "@cxr/kernels";

export interface SmallCnnConfig {
  /** Channels of each stride-2 stage. */
  widths: number[];
  /** Number of output labels. */
  labels: number;
  seed: number;
}

export const DEFAULT_SMALL_CNN: SmallCnnConfig = { widths: [16, 32, 64, 64], labels: 14, seed: 0 };

class ConvStage extends Module {
  readonly conv: Conv2d;
  readonly norm: BatchNorm2d;
  constructor(gpu: Gpu, inChannels: number, outChannels: number, init: ParameterInit) {
    super(gpu);
    this.conv = this.child(
      "conv",
      new Conv2d(gpu, inChannels, outChannels, 3, init, { stride: 2, padding: 1, bias: false }),
    );
    this.norm = this.child("norm", new BatchNorm2d(gpu, outChannels));
  }
  forward(x: Tensor): Tensor {
    return relu(this.norm.forward(this.conv.forward(x)));
  }
}

export class SmallCnn extends Module {
  readonly stages: ModuleList<ConvStage>;
  readonly classifier: Linear;

  constructor(
    gpu: Gpu,
    readonly config: SmallCnnConfig = DEFAULT_SMALL_CNN,
  ) {
    super(gpu);
    if (config.widths.length === 0) throw new Error("SmallCnn: needs at least one stage width");
    const init = new ParameterInit(config.seed);
    this.stages = this.child("stages", new ModuleList<ConvStage>(gpu));
    let channels = 1;
    for (const width of config.widths) {
      this.stages.push(new ConvStage(gpu, channels, width, init));
      channels = width;
    }
    this.classifier = this.child("classifier", new Linear(gpu, channels, config.labels, init));
  }

  /** images [N, 1, S, S] in [-1, 1] -> logits [N, labels]. */
  forward(images: Tensor): Tensor {
    let x = images;
    for (const stage of this.stages.items) x = stage.forward(x);
    return this.classifier.forward(globalAvgPool2d(x));
  }
}
