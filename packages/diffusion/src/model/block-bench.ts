/**
 * The diffusion model's case for `cxr bench kernels --models` (the kernels package runs and prints
 * it; the CLI passes it down): one UNet block, a ResnetBlock2D followed by a Transformer2DModel
 * (self-attention over the 32x32 = 1024 tokens, cross-attention to a text context, GEGLU
 * feed-forward), forward and backward from a fixed output gradient. The knobs the block does not
 * fix (head width 64, text context 77 x 1024, 32 groups, linear projections, one transformer layer)
 * are SD 2's, read from the sd2-base config. The PyTorch twin is `reference/torch_reference.py
 * block`, which builds the same block from the same parameter layout.
 */
import { fileURLToPath } from "node:url";
import {
  backward,
  type Gpu,
  type ModelBenchCase,
  type ModelBenchSize,
  ParameterInit,
  randomNormal,
  silu,
} from "@cxr/kernels";
import { diffusionConfig } from "./config.ts";
import { ResnetBlock2D, Transformer2DModel } from "./unet.ts";

const TORCH_SCRIPT = fileURLToPath(new URL("../../reference/torch_reference.py", import.meta.url));

export interface UNetBlockBenchSpec {
  channels: number;
  size: number;
  heads: number;
  temb: number;
  groups: number;
  eps: number;
  contextLength: number;
  contextDim: number;
  linearProjection: boolean;
  layers: number;
  batch: number;
}

export function unetBlockBenchSpec(size: ModelBenchSize): UNetBlockBenchSpec {
  if (size === "quick") {
    return {
      channels: 16,
      size: 8,
      heads: 2,
      temb: 64,
      groups: 8,
      eps: 1e-5,
      contextLength: 7,
      contextDim: 32,
      linearProjection: true,
      layers: 1,
      batch: 1,
    };
  }
  const sd = diffusionConfig("sd2-base");
  const channels = 128;
  const headDim = sd.unet.blockOutChannels[0] / (sd.unet.attentionHeadDim as number[])[0]; // 320 / 5 = 64
  return {
    channels,
    size: 32,
    heads: channels / headDim,
    temb: 4 * channels,
    groups: sd.unet.normNumGroups,
    eps: sd.unet.normEps,
    contextLength: sd.textEncoder.maxPositions,
    contextDim: sd.unet.crossAttentionDim,
    linearProjection: sd.unet.useLinearProjection,
    layers: sd.unet.transformerLayersPerBlock,
    batch: 2,
  };
}

function unetBlockCase(size: ModelBenchSize): ModelBenchCase {
  const spec = unetBlockBenchSpec(size);
  return {
    name: "UNet block",
    source: "diffusion",
    shape: `batch ${spec.batch} x ${spec.channels}x${spec.size}x${spec.size}, ${spec.heads} heads of ${spec.channels / spec.heads}, context ${spec.contextLength}x${spec.contextDim}`,
    work: "ResnetBlock2D + Transformer2DModel forward + backward",
    setup(gpu: Gpu) {
      const init = new ParameterInit(0);
      const resnet = new ResnetBlock2D(
        gpu,
        spec.channels,
        spec.channels,
        spec.temb,
        spec.groups,
        spec.eps,
        init,
      );
      const transformer = new Transformer2DModel(
        gpu,
        spec.channels,
        spec.heads,
        spec.contextDim,
        spec.groups,
        spec.linearProjection,
        spec.layers,
        init,
      );
      const imageShape = [spec.batch, spec.channels, spec.size, spec.size];
      const x = randomNormal(gpu, imageShape, 1);
      const temb = randomNormal(gpu, [spec.batch, spec.temb], 2);
      const context = randomNormal(gpu, [spec.batch, spec.contextLength, spec.contextDim], 3);
      const gradOutput = randomNormal(gpu, imageShape, 4);
      const tembActivated = silu(temb); // the UNet computes SiLU(temb) once for all its resnets
      const parameters = [...resnet.parameters(), ...transformer.parameters()];
      return {
        step() {
          const out = transformer.forward(resnet.forward(x, tembActivated), context);
          backward(out, gradOutput);
          out.release();
          for (const parameter of parameters) {
            parameter.grad?.release();
            parameter.grad = null;
          }
        },
        dispose() {
          for (const tensor of [x, temb, tembActivated, context, gradOutput]) tensor.release();
          resnet.dispose();
          transformer.dispose();
        },
      };
    },
    pytorch: {
      script: TORCH_SCRIPT,
      args: [
        "block",
        ...Object.entries({
          channels: spec.channels,
          size: spec.size,
          heads: spec.heads,
          temb: spec.temb,
          groups: spec.groups,
          eps: spec.eps,
          "context-length": spec.contextLength,
          "context-dim": spec.contextDim,
          "linear-projection": spec.linearProjection ? 1 : 0,
          layers: spec.layers,
          batch: spec.batch,
        }).flatMap(([flag, value]) => [`--${flag}`, String(value)]),
      ],
    },
  };
}

/** The diffusion model's cases for `cxr bench kernels --models`. */
export function modelBenchCases(size: ModelBenchSize): ModelBenchCase[] {
  return [unetBlockCase(size)];
}
