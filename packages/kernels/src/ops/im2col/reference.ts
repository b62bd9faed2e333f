/**
 * The float64 CPU reference of im2col (forward) and col2im (its gradient), on row-major data.
 * `im2colOpReference` is the same behind the shared op-reference interface. conv2dIm2col's reference
 * is conv2d's (`conv2dOpReference`, groups 1).
 */
import type { Shape } from "../../runtime/tensor.ts";
import type { OpReference } from "../common/reference.ts";
import {
  insideInput,
  type Pair,
  type WindowOptions,
  window2d,
  windowInputColumn,
  windowInputRow,
} from "../common/window.ts";

/** Visits every column entry in order with the input index it reads, or -1 in the padding. */
function forEachEntry(g: ReturnType<typeof window2d>, visit: (index: number, input: number) => void): void {
  let index = 0;
  for (let n = 0; n < g.batch; n++) {
    for (let oy = 0; oy < g.outHeight; oy++) {
      for (let ox = 0; ox < g.outWidth; ox++) {
        for (let c = 0; c < g.channels; c++) {
          for (let ky = 0; ky < g.kernelHeight; ky++) {
            for (let kx = 0; kx < g.kernelWidth; kx++) {
              const iy = windowInputRow(g, oy, ky);
              const ix = windowInputColumn(g, ox, kx);
              visit(
                index++,
                insideInput(g, iy, ix) ? ((n * g.channels + c) * g.height + iy) * g.width + ix : -1,
              );
            }
          }
        }
      }
    }
  }
}

export const im2colReference = {
  /** cols [N, OH*OW, C*kH*kW] from x [N, C, H, W]; zero where a window reads padding. */
  forward(x: Float64Array, shape: Shape, kernel: Pair, options: WindowOptions): Float64Array {
    const g = window2d("im2col", shape, kernel, options);
    const cols = new Float64Array(
      g.batch * g.outHeight * g.outWidth * g.channels * g.kernelHeight * g.kernelWidth,
    );
    forEachEntry(g, (index, input) => {
      cols[index] = input >= 0 ? x[input] : 0;
    });
    return cols;
  },
  /** col2im: the gradient with respect to x, each pixel the sum of the column entries that read it. */
  backward(gradCols: Float64Array, shape: Shape, kernel: Pair, options: WindowOptions): Float64Array {
    const g = window2d("im2col", shape, kernel, options);
    const grad = new Float64Array(g.batch * g.channels * g.height * g.width);
    forEachEntry(g, (index, input) => {
      if (input >= 0) grad[input] += gradCols[index];
    });
    return grad;
  },
};

/** What an im2col call is, for the shared reference interface. */
export interface Im2colParams {
  x: Shape;
  kernel: [number, number];
  options: WindowOptions;
}

/** `im2colReference` behind the shared interface: one input (x), its gradient. */
export const im2colOpReference: OpReference<Im2colParams> = {
  forward: ([x], { x: shape, kernel, options }) => im2colReference.forward(x, shape, kernel, options),
  backward: (_inputs, gradOutput, { x: shape, kernel, options }) => [
    im2colReference.backward(gradOutput, shape, kernel, options),
  ],
};
