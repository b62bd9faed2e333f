/**
 * End-to-end: small networks built from our modules and kernels really learn. Each test states the
 * factor by which the loss must fall; the data are seeded, so the runs are reproducible.
 */
import {
  AdamW,
  Attention,
  add,
  BatchNorm2d,
  backward,
  bceWithLogitsLoss,
  Conv2d,
  defaultGpu,
  type Gpu,
  GroupNorm,
  Linear,
  Module,
  mean,
  mseLoss,
  noGrad,
  ParameterInit,
  permute,
  relu,
  reshape,
  silu,
  Tensor,
  tidy,
} from "@cxr/kernels";
import { describe, expect, it } from "vitest";
import { randomValues } from "./helpers.ts";

class Mlp extends Module {
  readonly layers: Linear[];
  constructor(gpu: Gpu, init: ParameterInit) {
    super(gpu);
    this.layers = [
      this.child("0", new Linear(gpu, 2, 32, init)),
      this.child("1", new Linear(gpu, 32, 32, init)),
      this.child("2", new Linear(gpu, 32, 1, init)),
    ];
  }
  forward(x: Tensor): Tensor {
    const hidden = silu(this.layers[1].forward(silu(this.layers[0].forward(x))));
    return this.layers[2].forward(hidden);
  }
}

/** Conv -> GroupNorm -> SiLU -> strided conv -> BatchNorm -> ReLU -> self-attention over pixels -> head. */
class TinyConvNet extends Module {
  readonly conv1: Conv2d;
  readonly norm1: GroupNorm;
  readonly conv2: Conv2d;
  readonly norm2: BatchNorm2d;
  readonly attention: Attention;
  readonly head: Linear;
  constructor(gpu: Gpu, init: ParameterInit) {
    super(gpu);
    this.conv1 = this.child("conv1", new Conv2d(gpu, 1, 8, 3, init, { padding: 1 }));
    this.norm1 = this.child("norm1", new GroupNorm(gpu, 2, 8));
    this.conv2 = this.child("conv2", new Conv2d(gpu, 8, 8, 3, init, { padding: 1, stride: 2 }));
    this.norm2 = this.child("norm2", new BatchNorm2d(gpu, 8));
    this.attention = this.child("attention", new Attention(gpu, 8, init, { heads: 2, headDim: 4 }));
    this.head = this.child("head", new Linear(gpu, 8, 2, init));
  }
  forward(images: Tensor): Tensor {
    const features = relu(
      this.norm2.forward(this.conv2.forward(silu(this.norm1.forward(this.conv1.forward(images))))),
    );
    const [batch, channels, height, width] = features.shape;
    const tokens = reshape(permute(features, [0, 2, 3, 1]), [batch, height * width, channels]);
    const attended = add(tokens, this.attention.forward(tokens));
    return this.head.forward(mean(attended, 1));
  }
}

/** Images 8x8 with a bright 2x2 blob in the left half (label 0) and/or the top half (label 1). */
function blobDataset(count: number, seed: number) {
  const noise = randomValues(count * 64, seed, 0.3);
  const images = new Float32Array(count * 64);
  const labels = new Float32Array(count * 2);
  for (let n = 0; n < count; n++) {
    const left = n % 2;
    const top = Math.floor(n / 2) % 2;
    const x = left ? 1 + (n % 3) : 5 + (n % 2);
    const y = top ? 1 + (n % 2) : 5 + (n % 3);
    for (let index = 0; index < 64; index++) images[n * 64 + index] = noise[n * 64 + index];
    for (let dy = 0; dy < 2; dy++) for (let dx = 0; dx < 2; dx++) images[n * 64 + (y + dy) * 8 + x + dx] += 2;
    labels[n * 2] = left;
    labels[n * 2 + 1] = top;
  }
  return { images, labels };
}

async function lossValue(loss: Tensor): Promise<number> {
  return (await loss.download())[0];
}

describe("training small networks", () => {
  it("an MLP fits a smooth 2-D function: loss falls by at least 20x in 300 AdamW steps", async () => {
    const gpu = await defaultGpu();
    const model = new Mlp(gpu, new ParameterInit(7));
    const points = randomValues(128 * 2, 3);
    const targets = new Float32Array(128);
    for (let i = 0; i < 128; i++) targets[i] = Math.sin(2 * points[2 * i]) * Math.cos(points[2 * i + 1]);
    const x = Tensor.upload(gpu, Float32Array.from(points), [128, 2]);
    const y = Tensor.upload(gpu, targets, [128, 1]);
    const optimizer = new AdamW(model.parameters(), { learningRate: 1e-2, weightDecay: 0 });
    const losses: number[] = [];
    for (let step = 0; step < 300; step++) {
      const loss = mseLoss(model.forward(x), y);
      if (step === 0 || step === 299) losses.push(await lossValue(loss));
      backward(loss);
      loss.release();
      optimizer.step();
      optimizer.zeroGrad();
    }
    expect(losses[1]).toBeLessThan(losses[0] / 20);
    model.dispose();
  });

  it("a conv net with group norm, batch norm and attention learns two labels: BCE falls by at least 5x in 200 steps", async () => {
    const gpu = await defaultGpu();
    const model = new TinyConvNet(gpu, new ParameterInit(11));
    const { images, labels } = blobDataset(16, 5);
    const x = Tensor.upload(gpu, images, [16, 1, 8, 8]);
    const y = Tensor.upload(gpu, labels, [16, 2]);
    // Mask out one label of a few images, as uncertain CheXpert labels are under U-Ignore.
    const maskValues = new Float32Array(32).fill(1);
    maskValues[3] = 0;
    maskValues[10] = 0;
    const mask = Tensor.upload(gpu, maskValues, [16, 2]);
    const optimizer = new AdamW(model.parameters(), { learningRate: 1e-2, weightDecay: 1e-4 });
    const losses: number[] = [];
    for (let step = 0; step < 200; step++) {
      const loss = bceWithLogitsLoss(model.forward(x), y, mask);
      if (step === 0 || step === 199) losses.push(await lossValue(loss));
      backward(loss);
      loss.release();
      optimizer.step();
      optimizer.zeroGrad();
    }
    expect(losses[1]).toBeLessThan(losses[0] / 5);
    // In eval mode (running batch-norm statistics) the predictions are still right.
    model.eval();
    const logits = await noGrad(() => tidy(() => model.forward(x))).download();
    let correct = 0;
    for (let i = 0; i < 32; i++) if (logits[i] > 0 === labels[i] > 0.5) correct++;
    expect(correct).toBeGreaterThanOrEqual(30);
    model.dispose();
  });
});
