/**
 * The float64 CPU reference of conv2d (forward, and the gradients of the input, the weight and the
 * bias), the specification every variant is tested against. `conv2dOpReference` is the same behind
 * the shared op-reference interface.
 */
import type { Shape } from "../../runtime/tensor.ts";
import type { OpReference } from "../common/reference.ts";
import { windowInputColumn, windowInputRow } from "../common/window.ts";
import { type Conv2dGeometry, type Conv2dOptions, conv2dGeometry, conv2dOutputShape } from "./geometry.ts";

export const conv2dReference = {
  forward(
    x: Float64Array,
    inputShape: Shape,
    w: Float64Array,
    weightShape: Shape,
    bias: Float64Array | null,
    options: Conv2dOptions = {},
  ): Float64Array {
    const g = conv2dGeometry("conv2dReference", inputShape, weightShape, options);
    const y = new Float64Array(g.batch * g.outChannels * g.outHeight * g.outWidth);
    forEachTap(g, (yIndex, xIndex, wIndex) => {
      y[yIndex] += x[xIndex] * w[wIndex];
    });
    if (bias) {
      const plane = g.outHeight * g.outWidth;
      for (let index = 0; index < y.length; index++)
        y[index] += bias[Math.floor(index / plane) % g.outChannels];
    }
    return y;
  },
  backwardInput(
    gradOutput: Float64Array,
    inputShape: Shape,
    w: Float64Array,
    weightShape: Shape,
    options: Conv2dOptions = {},
  ): Float64Array {
    const g = conv2dGeometry("conv2dReference", inputShape, weightShape, options);
    const gradInput = new Float64Array(g.batch * g.inChannels * g.height * g.width);
    forEachTap(g, (yIndex, xIndex, wIndex) => {
      gradInput[xIndex] += gradOutput[yIndex] * w[wIndex];
    });
    return gradInput;
  },
  backwardWeight(
    gradOutput: Float64Array,
    x: Float64Array,
    inputShape: Shape,
    weightShape: Shape,
    options: Conv2dOptions = {},
  ): Float64Array {
    const g = conv2dGeometry("conv2dReference", inputShape, weightShape, options);
    const gradWeight = new Float64Array(g.outChannels * g.inPerGroup * g.kernelHeight * g.kernelWidth);
    forEachTap(g, (yIndex, xIndex, wIndex) => {
      gradWeight[wIndex] += gradOutput[yIndex] * x[xIndex];
    });
    return gradWeight;
  },
  backwardBias(gradOutput: Float64Array, outputShape: Shape): Float64Array {
    const [batch, channels, height, width] = outputShape;
    const gradBias = new Float64Array(channels);
    for (let index = 0; index < batch * channels * height * width; index++) {
      gradBias[Math.floor(index / (height * width)) % channels] += gradOutput[index];
    }
    return gradBias;
  },
};

/** Calls `visit(yIndex, xIndex, wIndex)` for every (output, input, weight) triple of the convolution. */
function forEachTap(
  g: Conv2dGeometry,
  visit: (yIndex: number, xIndex: number, wIndex: number) => void,
): void {
  for (let n = 0; n < g.batch; n++)
    for (let o = 0; o < g.outChannels; o++) {
      const group = Math.floor(o / g.outPerGroup);
      for (let oy = 0; oy < g.outHeight; oy++)
        for (let ox = 0; ox < g.outWidth; ox++) {
          const yIndex = ((n * g.outChannels + o) * g.outHeight + oy) * g.outWidth + ox;
          for (let c = 0; c < g.inPerGroup; c++)
            for (let ky = 0; ky < g.kernelHeight; ky++) {
              const iy = windowInputRow(g, oy, ky);
              if (iy < 0 || iy >= g.height) continue;
              for (let kx = 0; kx < g.kernelWidth; kx++) {
                const ix = windowInputColumn(g, ox, kx);
                if (ix < 0 || ix >= g.width) continue;
                const xIndex = ((n * g.inChannels + group * g.inPerGroup + c) * g.height + iy) * g.width + ix;
                const wIndex = ((o * g.inPerGroup + c) * g.kernelHeight + ky) * g.kernelWidth + kx;
                visit(yIndex, xIndex, wIndex);
              }
            }
        }
    }
}

/** What a conv2d call is, for the shared reference interface: shapes and options. */
export interface Conv2dParams {
  x: Shape;
  w: Shape;
  /** Inputs are [x, w, bias] when true, [x, w] otherwise. */
  bias?: boolean;
  options: Conv2dOptions;
}

/** `conv2dReference` behind the shared interface: inputs [x, w] or [x, w, bias], one gradient each. */
export const conv2dOpReference: OpReference<Conv2dParams> = {
  forward: ([x, w, bias], params) =>
    conv2dReference.forward(x, params.x, w, params.w, params.bias ? bias : null, params.options),
  backward: ([x, w], gradOutput, params) => {
    const g = conv2dGeometry("conv2dReference", params.x, params.w, params.options);
    return [
      conv2dReference.backwardInput(gradOutput, params.x, w, params.w, params.options),
      conv2dReference.backwardWeight(gradOutput, x, params.x, params.w, params.options),
      ...(params.bias ? [conv2dReference.backwardBias(gradOutput, conv2dOutputShape(g))] : []),
    ];
  },
};
