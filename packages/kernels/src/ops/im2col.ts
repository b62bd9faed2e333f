/**
 * im2col: unfolds convolution windows of x [N, C, H, W] into rows of cols [N, OH*OW, C*kH*kW]
 * (PyTorch's unfold, transposed), so a convolution becomes one matmul. Its backward, col2im, is a
 * gather: each input pixel sums the column entries that read it, so no atomics are needed.
 * Used by `conv2dIm2col` (a matmul-backed convolution and a test oracle for conv2d).
 */
import { needsGrad, record } from "../runtime/autograd.ts";
import { grid, LINEAR_INDEX_WGSL, launch } from "../runtime/kernel.ts";
import { OpError, type Shape, Tensor } from "../runtime/tensor.ts";
import { Params } from "../runtime/uniforms.ts";
import { permute, reshape } from "./layout/index.ts";
import { matmul } from "./matmul.ts";

export interface Im2colGeometry {
  n: number;
  c: number;
  h: number;
  w: number;
  kH: number;
  kW: number;
  stride: [number, number];
  padding: [number, number];
  dilation: [number, number];
  outH: number;
  outW: number;
}

const pair = (value: number | [number, number] | undefined, fallback: number): [number, number] =>
  value === undefined ? [fallback, fallback] : typeof value === "number" ? [value, value] : value;

export interface WindowOptions {
  stride?: number | [number, number];
  padding?: number | [number, number];
  dilation?: number | [number, number];
}

export function im2colGeometry(
  op: string,
  x: Shape,
  kernel: [number, number],
  options: WindowOptions,
): Im2colGeometry {
  if (x.length !== 4) throw new OpError(op, "expects x as [N, C, H, W]", { x });
  const [n, c, h, w] = x;
  const stride = pair(options.stride, 1);
  const padding = pair(options.padding, 0);
  const dilation = pair(options.dilation, 1);
  for (const value of [...stride, ...dilation, ...kernel]) {
    if (!Number.isInteger(value) || value < 1)
      throw new OpError(op, "kernel, stride and dilation must be positive integers", { x });
  }
  if (padding.some((value) => !Number.isInteger(value) || value < 0)) {
    throw new OpError(op, "padding must be a non-negative integer", { x });
  }
  const outH = Math.floor((h + 2 * padding[0] - dilation[0] * (kernel[0] - 1) - 1) / stride[0]) + 1;
  const outW = Math.floor((w + 2 * padding[1] - dilation[1] * (kernel[1] - 1) - 1) / stride[1]) + 1;
  if (outH < 1 || outW < 1) {
    throw new OpError(
      op,
      `kernel ${kernel[0]}x${kernel[1]} (dilation ${dilation.join("x")}) exceeds the padded input`,
      { x },
    );
  }
  return { n, c, h, w, kH: kernel[0], kW: kernel[1], stride, padding, dilation, outH, outW };
}

const GEOMETRY = `struct Params {
  size: u32, c: u32, h: u32, w: u32, kH: u32, kW: u32, outH: u32, outW: u32,
  strideH: u32, strideW: u32, padH: u32, padW: u32, dilationH: u32, dilationW: u32 }`;

function geometryParams(size: number, g: Im2colGeometry): Params {
  return new Params().u32(
    size,
    g.c,
    g.h,
    g.w,
    g.kH,
    g.kW,
    g.outH,
    g.outW,
    g.stride[0],
    g.stride[1],
    g.padding[0],
    g.padding[1],
    g.dilation[0],
    g.dilation[1],
  );
}

/** One column entry per invocation: cols[n, pixel, (c, ky, kx)]. */
export const IM2COL_WGSL = `
@group(0) @binding(0) var<storage, read> input: array<f32>;
@group(0) @binding(1) var<storage, read_write> cols: array<f32>;
${GEOMETRY}
@group(0) @binding(2) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  let window = params.c * params.kH * params.kW;
  let k = index % window;
  let pixel = (index / window) % (params.outH * params.outW);
  let n = index / (window * params.outH * params.outW);
  let kx = k % params.kW;
  let ky = (k / params.kW) % params.kH;
  let c = k / (params.kW * params.kH);
  let iy = i32((pixel / params.outW) * params.strideH + ky * params.dilationH) - i32(params.padH);
  let ix = i32((pixel % params.outW) * params.strideW + kx * params.dilationW) - i32(params.padW);
  var value = 0.0;
  if (iy >= 0 && iy < i32(params.h) && ix >= 0 && ix < i32(params.w)) {
    value = input[((n * params.c + c) * params.h + u32(iy)) * params.w + u32(ix)];
  }
  cols[index] = value;
}`;

/** One input pixel per invocation: the sum of every column entry that read it. */
export const COL2IM_WGSL = `
@group(0) @binding(0) var<storage, read> cols: array<f32>;
@group(0) @binding(1) var<storage, read_write> gradInput: array<f32>;
${GEOMETRY}
@group(0) @binding(2) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  let x = index % params.w;
  let y = (index / params.w) % params.h;
  let c = (index / (params.w * params.h)) % params.c;
  let n = index / (params.w * params.h * params.c);
  let window = params.c * params.kH * params.kW;
  var total = 0.0;
  for (var ky = 0u; ky < params.kH; ky++) {
    let top = i32(y + params.padH) - i32(ky * params.dilationH);
    if (top < 0 || top % i32(params.strideH) != 0) { continue; }
    let oy = u32(top) / params.strideH;
    if (oy >= params.outH) { continue; }
    for (var kx = 0u; kx < params.kW; kx++) {
      let left = i32(x + params.padW) - i32(kx * params.dilationW);
      if (left < 0 || left % i32(params.strideW) != 0) { continue; }
      let ox = u32(left) / params.strideW;
      if (ox >= params.outW) { continue; }
      let k = (c * params.kH + ky) * params.kW + kx;
      total += cols[((n * params.outH + oy) * params.outW + ox) * window + k];
    }
  }
  gradInput[index] = total;
}`;

/** x [N, C, H, W] -> cols [N, OH*OW, C*kH*kW]. */
export function im2col(x: Tensor, kernel: [number, number], options: WindowOptions = {}): Tensor {
  if (x.dtype !== "f32") throw new OpError("im2col", `needs f32 input, got ${x.dtype}`, { x });
  const g = im2colGeometry("im2col", x.shape, kernel, options);
  const window = g.c * g.kH * g.kW;
  const cols = Tensor.empty(x.gpu, [g.n, g.outH * g.outW, window]);
  launch(
    x.gpu,
    { name: "im2col", code: IM2COL_WGSL },
    {
      bindings: [x, cols],
      params: geometryParams(cols.size, g),
      workgroups: grid(cols.size, 256),
      flops: 0,
      bytes: 8 * cols.size,
    },
  );
  if (needsGrad(x)) {
    record("im2col", [x], [cols], ([gradCols]) => {
      const gradInput = Tensor.empty(x.gpu, x.shape);
      launch(
        x.gpu,
        { name: "col2im", code: COL2IM_WGSL },
        {
          bindings: [gradCols!, gradInput],
          params: geometryParams(x.size, g),
          workgroups: grid(x.size, 256),
          flops: cols.size,
          bytes: 4 * (cols.size + x.size),
        },
      );
      return [gradInput];
    });
  }
  return cols;
}

/**
 * Convolution as im2col + matmul (groups = 1): y [N, O, OH, OW] from x [N, C, H, W] and
 * weight [O, C, kH, kW]. Gradients flow through im2col's col2im and matmul's backward.
 */
export function conv2dIm2col(
  x: Tensor,
  weight: Tensor,
  bias: Tensor | null,
  options: WindowOptions = {},
): Tensor {
  if (weight.rank !== 4) throw new OpError("conv2dIm2col", "weight must be [O, C, kH, kW]", { x, weight });
  const [outChannels, inChannels, kH, kW] = weight.shape;
  if (x.rank !== 4 || x.shape[1] !== inChannels) {
    throw new OpError("conv2dIm2col", `x must be [N, ${inChannels}, H, W] to match the weight`, {
      x,
      weight,
    });
  }
  if (bias && (bias.rank !== 1 || bias.shape[0] !== outChannels)) {
    throw new OpError("conv2dIm2col", `bias must be [${outChannels}]`, { weight, bias });
  }
  const g = im2colGeometry("conv2dIm2col", x.shape, [kH, kW], options);
  const cols = im2col(x, [kH, kW], options);
  const flatWeight = reshape(weight, [outChannels, inChannels * kH * kW]);
  const rows = matmul(cols, flatWeight, { transposeB: true, bias: bias ?? undefined });
  const image = permute(rows, [0, 2, 1]);
  return reshape(image, [g.n, outChannels, g.outH, g.outW]);
}

/** Float64 references. */
export const im2colReference = {
  forward(x: Float64Array, shape: Shape, kernel: [number, number], options: WindowOptions): Float64Array {
    const g = im2colGeometry("im2col", shape, kernel, options);
    const window = g.c * g.kH * g.kW;
    const cols = new Float64Array(g.n * g.outH * g.outW * window);
    let index = 0;
    for (let n = 0; n < g.n; n++) {
      for (let oy = 0; oy < g.outH; oy++) {
        for (let ox = 0; ox < g.outW; ox++) {
          for (let c = 0; c < g.c; c++) {
            for (let ky = 0; ky < g.kH; ky++) {
              for (let kx = 0; kx < g.kW; kx++) {
                const iy = oy * g.stride[0] + ky * g.dilation[0] - g.padding[0];
                const ix = ox * g.stride[1] + kx * g.dilation[1] - g.padding[1];
                const inside = iy >= 0 && iy < g.h && ix >= 0 && ix < g.w;
                cols[index++] = inside ? x[((n * g.c + c) * g.h + iy) * g.w + ix] : 0;
              }
            }
          }
        }
      }
    }
    return cols;
  },
  backward(
    gradCols: Float64Array,
    shape: Shape,
    kernel: [number, number],
    options: WindowOptions,
  ): Float64Array {
    const g = im2colGeometry("im2col", shape, kernel, options);
    const grad = new Float64Array(g.n * g.c * g.h * g.w);
    let index = 0;
    for (let n = 0; n < g.n; n++) {
      for (let oy = 0; oy < g.outH; oy++) {
        for (let ox = 0; ox < g.outW; ox++) {
          for (let c = 0; c < g.c; c++) {
            for (let ky = 0; ky < g.kH; ky++) {
              for (let kx = 0; kx < g.kW; kx++) {
                const iy = oy * g.stride[0] + ky * g.dilation[0] - g.padding[0];
                const ix = ox * g.stride[1] + kx * g.dilation[1] - g.padding[1];
                const value = gradCols[index++];
                if (iy >= 0 && iy < g.h && ix >= 0 && ix < g.w)
                  grad[((n * g.c + c) * g.h + iy) * g.w + ix] += value;
              }
            }
          }
        }
      }
    }
    return grad;
  },
};
