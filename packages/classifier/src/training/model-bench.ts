/**
 * The classifier's model-level cases for `cxr bench kernels --models` (the kernels package runs and
 * prints them; the CLI passes them down): one training step of the quickstart SmallCnn and the
 * forward and backward of a DenseNet-121 dense block. Each names its PyTorch twin in
 * scripts/bench_models_torch.py, which builds the same shapes with the same config.
 */
import { fileURLToPath } from "node:url";
import {
  AdamW,
  backward,
  bceWithLogitsLoss,
  clipGradNorm,
  type Gpu,
  type ModelBenchCase,
  type ModelBenchSize,
  ParameterInit,
  Tensor,
} from "@cxr/kernels";
import { DENSENET_CONFIGS, DenseBlock } from "./densenet.ts";
import { DEFAULT_SMALL_CNN, SmallCnn } from "./model.ts";
import { DEFAULT_TRAIN_CONFIG } from "./train.ts";

const TORCH_SCRIPT = fileURLToPath(new URL("../../scripts/bench_models_torch.py", import.meta.url));

/** Deterministic values: uniform in [-1, 1), or 0/1 above `threshold`. */
function seeded(count: number, seed: number, threshold?: number): Float32Array {
  let state = seed >>> 0;
  return Float32Array.from({ length: count }, () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    const u = state / 4294967296;
    return threshold === undefined ? u * 2 - 1 : u > threshold ? 1 : 0;
  });
}

/**
 * The quickstart's training step: SmallCnn (default widths), BCE with the U-Ignore mask, gradient
 * clipping at 1, AdamW with the training defaults.
 */
function smallCnnCase(size: ModelBenchSize): ModelBenchCase {
  const batch = size === "quick" ? 4 : DEFAULT_TRAIN_CONFIG.batchSize;
  const imageSize = size === "quick" ? 16 : DEFAULT_TRAIN_CONFIG.imageSize;
  const config = DEFAULT_SMALL_CNN;
  const { learningRate, weightDecay, maxGradNorm } = DEFAULT_TRAIN_CONFIG;
  return {
    name: "SmallCnn training step",
    source: "classifier",
    shape: `batch ${batch} x 1x${imageSize}x${imageSize}, widths ${config.widths.join(",")}, ${config.labels} labels`,
    work: "forward + BCE + backward + clip + AdamW",
    setup(gpu: Gpu) {
      const model = new SmallCnn(gpu, config).train();
      const images = Tensor.upload(gpu, seeded(batch * imageSize * imageSize, 1), [
        batch,
        1,
        imageSize,
        imageSize,
      ]);
      const labels = Tensor.upload(gpu, seeded(batch * config.labels, 2, 0.8), [batch, config.labels]);
      const mask = Tensor.upload(gpu, seeded(batch * config.labels, 3, 0.1), [batch, config.labels]);
      const optimizer = new AdamW(model.parameters(), { learningRate, weightDecay });
      return {
        step() {
          const loss = bceWithLogitsLoss(model.forward(images), labels, mask);
          backward(loss);
          clipGradNorm(model.parameters(), maxGradNorm).release();
          optimizer.step();
          optimizer.zeroGrad();
          loss.release();
        },
        dispose() {
          optimizer.release();
          for (const tensor of [images, labels, mask]) tensor.release();
          model.dispose();
        },
      };
    },
    pytorch: {
      script: TORCH_SCRIPT,
      args: [
        "small-cnn",
        "--batch",
        String(batch),
        "--size",
        String(imageSize),
        "--widths",
        config.widths.join(","),
        "--labels",
        String(config.labels),
        "--lr",
        String(learningRate),
        "--weight-decay",
        String(weightDecay),
        "--max-grad-norm",
        String(maxGradNorm),
      ],
    },
  };
}

/**
 * DenseNet-121's first dense block (6 layers, 64 input channels, growth 32, bottleneck 4) at the
 * 56x56 it runs at for 224 px input, in training mode: forward, then backward from a fixed output
 * gradient (every parameter's gradient, no optimizer).
 */
function denseBlockCase(size: ModelBenchSize): ModelBenchCase {
  const base = DENSENET_CONFIGS.densenet121;
  const spec =
    size === "quick"
      ? { layers: 2, inChannels: 8, growth: 4, bnSize: 2, side: 8, batch: 1 }
      : {
          layers: base.blockConfig[0],
          inChannels: base.numInitFeatures,
          growth: base.growthRate,
          bnSize: base.bnSize,
          side: 56,
          batch: 2,
        };
  const outChannels = spec.inChannels + spec.layers * spec.growth;
  return {
    name: "DenseNet dense block",
    source: "classifier",
    shape: `batch ${spec.batch} x ${spec.inChannels}x${spec.side}x${spec.side}, ${spec.layers} layers, growth ${spec.growth}, bottleneck ${spec.bnSize} -> ${outChannels} channels`,
    work: "forward + backward (training-mode batch norm)",
    setup(gpu: Gpu) {
      const block = new DenseBlock(
        gpu,
        spec.layers,
        spec.inChannels,
        spec.growth,
        spec.bnSize,
        new ParameterInit(0),
      );
      block.train();
      const input = Tensor.upload(gpu, seeded(spec.batch * spec.inChannels * spec.side ** 2, 4), [
        spec.batch,
        spec.inChannels,
        spec.side,
        spec.side,
      ]);
      const outShape = [spec.batch, outChannels, spec.side, spec.side];
      const gradOutput = Tensor.upload(gpu, seeded(spec.batch * outChannels * spec.side ** 2, 5), outShape);
      const parameters = block.parameters();
      return {
        step() {
          const out = block.forward(input);
          backward(out, gradOutput);
          out.release();
          for (const parameter of parameters) {
            parameter.grad?.release();
            parameter.grad = null;
          }
        },
        dispose() {
          input.release();
          gradOutput.release();
          block.dispose();
        },
      };
    },
    pytorch: {
      script: TORCH_SCRIPT,
      args: [
        "dense-block",
        "--batch",
        String(spec.batch),
        "--size",
        String(spec.side),
        "--layers",
        String(spec.layers),
        "--in-channels",
        String(spec.inChannels),
        "--growth",
        String(spec.growth),
        "--bn-size",
        String(spec.bnSize),
      ],
    },
  };
}

/** The classifier's cases for `cxr bench kernels --models`. */
export function modelBenchCases(size: ModelBenchSize): ModelBenchCase[] {
  return [smallCnnCase(size), denseBlockCase(size)];
}
