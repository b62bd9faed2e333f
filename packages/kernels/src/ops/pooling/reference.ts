/**
 * The float64 CPU reference of the poolings (average with count_include_pad, max), forward and the
 * gradient with respect to x. `poolOpReference(kind)` is the same behind the shared op-reference
 * interface.
 */
import type { Shape } from "../../runtime/tensor.ts";
import type { OpReference } from "../common/reference.ts";
import { insideInput, windowInputColumn, windowInputRow } from "../common/window.ts";
import { type Pool2dOptions, poolWindow } from "./geometry.ts";

/** Float64 references: forward and the gradient with respect to x. */
export const poolReference = {
  forward(kind: "avg" | "max", x: Float64Array, shape: Shape, options: Pool2dOptions): Float64Array {
    const g = poolWindow("pool", shape, options);
    const output = new Float64Array(g.batch * g.channels * g.outHeight * g.outWidth);
    let index = 0;
    for (let plane = 0; plane < g.batch * g.channels; plane++) {
      for (let oy = 0; oy < g.outHeight; oy++) {
        for (let ox = 0; ox < g.outWidth; ox++) {
          let total = 0;
          let best = Number.NEGATIVE_INFINITY;
          for (let ky = 0; ky < g.kernelHeight; ky++) {
            for (let kx = 0; kx < g.kernelWidth; kx++) {
              const iy = windowInputRow(g, oy, ky);
              const ix = windowInputColumn(g, ox, kx);
              if (!insideInput(g, iy, ix)) continue;
              const value = x[(plane * g.height + iy) * g.width + ix];
              total += value;
              best = Math.max(best, value);
            }
          }
          output[index++] = kind === "avg" ? total / (g.kernelHeight * g.kernelWidth) : best;
        }
      }
    }
    return output;
  },
  backward(
    kind: "avg" | "max",
    x: Float64Array,
    shape: Shape,
    options: Pool2dOptions,
    gradOutput: Float64Array,
  ) {
    const g = poolWindow("pool", shape, options);
    const grad = new Float64Array(x.length);
    let index = 0;
    for (let plane = 0; plane < g.batch * g.channels; plane++) {
      for (let oy = 0; oy < g.outHeight; oy++) {
        for (let ox = 0; ox < g.outWidth; ox++) {
          const gy = gradOutput[index++];
          let bestPosition = -1;
          let best = Number.NEGATIVE_INFINITY;
          for (let ky = 0; ky < g.kernelHeight; ky++) {
            for (let kx = 0; kx < g.kernelWidth; kx++) {
              const iy = windowInputRow(g, oy, ky);
              const ix = windowInputColumn(g, ox, kx);
              if (!insideInput(g, iy, ix)) continue;
              const position = (plane * g.height + iy) * g.width + ix;
              if (kind === "avg") grad[position] += gy / (g.kernelHeight * g.kernelWidth);
              else if (x[position] > best) {
                best = x[position];
                bestPosition = position;
              }
            }
          }
          if (kind === "max" && bestPosition >= 0) grad[bestPosition] += gy;
        }
      }
    }
    return grad;
  },
};

/** What a pooling call is, for the shared reference interface. */
export interface PoolParams {
  x: Shape;
  options: Pool2dOptions;
}

/** `poolReference` of one kind behind the shared interface: one input (x), its gradient. */
export function poolOpReference(kind: "avg" | "max"): OpReference<PoolParams> {
  return {
    forward: ([x], { x: shape, options }) => poolReference.forward(kind, x, shape, options),
    backward: ([x], gradOutput, { x: shape, options }) => [
      poolReference.backward(kind, x, shape, options, gradOutput),
    ],
  };
}
