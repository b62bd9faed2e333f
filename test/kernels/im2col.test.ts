import { backward, conv2dIm2col, im2col, im2colReference, type WindowOptions } from "@cxr/kernels";
import { describe, expect, it } from "vitest";
import { expectClose, finiteDifferenceGradient, randomValues, upload } from "./helpers.ts";

/** Direct float64 convolution (groups = 1), independent of im2col. */
function directConv(
  x: Float64Array,
  xShape: number[],
  w: Float64Array,
  wShape: number[],
  bias: Float64Array | null,
  options: { stride: number; padding: number; dilation: number },
) {
  const [n, c, h, width] = xShape;
  const [o, , kH, kW] = wShape;
  const { stride, padding, dilation } = options;
  const outH = Math.floor((h + 2 * padding - dilation * (kH - 1) - 1) / stride) + 1;
  const outW = Math.floor((width + 2 * padding - dilation * (kW - 1) - 1) / stride) + 1;
  const y = new Float64Array(n * o * outH * outW);
  for (let b = 0; b < n; b++)
    for (let oc = 0; oc < o; oc++)
      for (let oy = 0; oy < outH; oy++)
        for (let ox = 0; ox < outW; ox++) {
          let total = bias ? bias[oc] : 0;
          for (let ic = 0; ic < c; ic++)
            for (let ky = 0; ky < kH; ky++)
              for (let kx = 0; kx < kW; kx++) {
                const iy = oy * stride + ky * dilation - padding;
                const ix = ox * stride + kx * dilation - padding;
                if (iy < 0 || iy >= h || ix < 0 || ix >= width) continue;
                total += x[((b * c + ic) * h + iy) * width + ix] * w[((oc * c + ic) * kH + ky) * kW + kx];
              }
          y[((b * o + oc) * outH + oy) * outW + ox] = total;
        }
  return { y, shape: [n, o, outH, outW] };
}

const cases: [string, number[], number[], { stride: number; padding: number; dilation: number }][] = [
  ["1x1", [1, 1, 1, 1], [1, 1, 1, 1], { stride: 1, padding: 0, dilation: 1 }],
  ["3x3 pad 1", [2, 3, 7, 5], [4, 3, 3, 3], { stride: 1, padding: 1, dilation: 1 }],
  ["3x3 stride 2 odd input", [1, 2, 9, 8], [3, 2, 3, 3], { stride: 2, padding: 1, dilation: 1 }],
  ["dilation 2", [1, 2, 9, 9], [2, 2, 3, 3], { stride: 1, padding: 2, dilation: 2 }],
  [
    "7x7 stride 2 pad 3 (DenseNet stem)",
    [2, 1, 32, 32],
    [8, 1, 7, 7],
    { stride: 2, padding: 3, dilation: 1 },
  ],
];

describe("im2col and conv2dIm2col", () => {
  it.each(cases)(
    "%s: im2col forward/backward and the convolution match direct float64 references",
    async (_name, xShape, wShape, options) => {
      const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1);
      const xValues = randomValues(size(xShape), 1);
      const wValues = randomValues(size(wShape), 2, 0.5);
      const biasValues = randomValues(wShape[0], 3);
      const kernel: [number, number] = [wShape[2], wShape[3]];
      const window: WindowOptions = options;

      const x = await upload(xValues, xShape, true);
      const cols = im2col(x, kernel, window);
      const colsReference = im2colReference.forward(xValues, xShape, kernel, window);
      expectClose(await cols.download(), colsReference, { atol: 0, rtol: 0 }, "im2col");
      const gradCols = randomValues(cols.size, 4);
      backward(cols, await upload(gradCols, cols.shape));
      expectClose(
        await x.grad!.download(),
        im2colReference.backward(gradCols, xShape, kernel, window),
        { atol: 1e-5, rtol: 1e-5 },
        "col2im",
      );

      const x2 = await upload(xValues, xShape, true);
      const w = await upload(wValues, wShape, true);
      const bias = await upload(biasValues, [wShape[0]], true);
      const y = conv2dIm2col(x2, w, bias, window);
      const reference = directConv(xValues, xShape, wValues, wShape, biasValues, options);
      expect(y.shape).toEqual(reference.shape);
      const tolerance = { atol: 1e-4, rtol: 1e-4 };
      expectClose(await y.download(), reference.y, tolerance, "conv forward");
      const gy = randomValues(y.size, 5);
      backward(y, await upload(gy, y.shape));
      const objective = (inputs: Float64Array[]) =>
        directConv(inputs[0], xShape, inputs[1], wShape, inputs[2], options).y;
      const inputs = [xValues.slice(), wValues.slice(), biasValues.slice()];
      // Finite differences of the direct convolution are exact up to rounding (it is linear in each input).
      expectClose(
        await x2.grad!.download(),
        finiteDifferenceGradient(objective, inputs, gy, 0, 1e-3),
        tolerance,
        "grad x",
      );
      expectClose(
        await w.grad!.download(),
        finiteDifferenceGradient(objective, inputs, gy, 1, 1e-3),
        tolerance,
        "grad w",
      );
      expectClose(
        await bias.grad!.download(),
        finiteDifferenceGradient(objective, inputs, gy, 2, 1e-3),
        tolerance,
        "grad bias",
      );
    },
  );

  it("reference col2im is the adjoint of im2col (finite differences)", () => {
    const shape = [1, 2, 5, 4];
    const x = randomValues(40, 7);
    const options = { stride: 2, padding: 1 };
    const cols = im2colReference.forward(x, shape, [3, 3], options);
    const g = randomValues(cols.length, 8);
    const numeric = finiteDifferenceGradient(
      ([input]) => im2colReference.forward(input, shape, [3, 3], options),
      [x],
      g,
      0,
    );
    expectClose(
      im2colReference.backward(g, shape, [3, 3], options),
      numeric,
      { atol: 1e-7, rtol: 1e-6 },
      "fd",
    );
  });

  it("rejects mismatched channels and oversized kernels, naming the op and shapes", async () => {
    const x = await upload(randomValues(2 * 3 * 4 * 4, 1), [2, 3, 4, 4]);
    const w = await upload(randomValues(5 * 2 * 3 * 3, 2), [5, 2, 3, 3]);
    expect(() => conv2dIm2col(x, w, null)).toThrow(
      /conv2dIm2col: x must be \[N, 2, H, W\] to match the weight \(x: \[2, 3, 4, 4\], weight: \[5, 2, 3, 3\]\)/,
    );
    expect(() => im2col(x, [7, 7])).toThrow(
      /im2col: kernel 7x7 \(dilation 1x1\) exceeds the padded input \(x: \[2, 3, 4, 4\]\)/,
    );
  });
});
