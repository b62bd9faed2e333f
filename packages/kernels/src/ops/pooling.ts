/**
 * 2-D pooling over [N, C, H, W]: average (count_include_pad, PyTorch's default), max (padding never
 * wins), and global average to [N, C]. Backward passes gather: every input pixel sums the output
 * gradients of the windows that cover it, so no atomics are needed.
 */
import { needsGrad, record } from "../runtime/autograd.ts";
import { grid, LINEAR_INDEX_WGSL, launch, wgsl } from "../runtime/kernel.ts";
import { OpError, type Shape, Tensor } from "../runtime/tensor.ts";
import { Params } from "../runtime/uniforms.ts";

export interface Pool2dOptions {
  kernel: number | [number, number];
  /** Defaults to the kernel size. */
  stride?: number | [number, number];
  padding?: number | [number, number];
}

interface PoolGeometry {
  n: number;
  c: number;
  h: number;
  w: number;
  outH: number;
  outW: number;
  kH: number;
  kW: number;
  sH: number;
  sW: number;
  pH: number;
  pW: number;
}

const pair = (value: number | [number, number]): [number, number] =>
  typeof value === "number" ? [value, value] : value;

export function poolGeometry(op: string, shape: Shape, options: Pool2dOptions): PoolGeometry {
  if (shape.length !== 4) throw new OpError(op, "expects [N, C, H, W]", { x: shape });
  const [kH, kW] = pair(options.kernel);
  const [sH, sW] = pair(options.stride ?? options.kernel);
  const [pH, pW] = pair(options.padding ?? 0);
  const [n, c, h, w] = shape;
  for (const value of [kH, kW, sH, sW]) {
    if (!Number.isInteger(value) || value < 1)
      throw new OpError(op, "kernel and stride must be positive integers", { x: shape });
  }
  if (pH < 0 || pW < 0 || pH * 2 > kH || pW * 2 > kW) {
    throw new OpError(op, `padding (${pH}, ${pW}) must be between 0 and half the kernel (${kH}, ${kW})`, {
      x: shape,
    });
  }
  const outH = Math.floor((h + 2 * pH - kH) / sH) + 1;
  const outW = Math.floor((w + 2 * pW - kW) / sW) + 1;
  if (outH < 1 || outW < 1)
    throw new OpError(op, `kernel ${kH}x${kW} is larger than the padded input`, { x: shape });
  return { n, c, h, w, outH, outW, kH, kW, sH, sW, pH, pW };
}

const GEOMETRY_STRUCT = `struct Params {
  size: u32, h: u32, w: u32, outH: u32, outW: u32, kH: u32, kW: u32, sH: u32, sW: u32, pH: u32, pW: u32 }`;

function geometryParams(size: number, g: PoolGeometry): Params {
  return new Params().u32(size, g.h, g.w, g.outH, g.outW, g.kH, g.kW, g.sH, g.sW, g.pH, g.pW);
}

const POOL_FORWARD_TEMPLATE = `
@group(0) @binding(0) var<storage, read> input: array<f32>;
@group(0) @binding(1) var<storage, read_write> output: array<f32>;
{{argmaxBinding}}
${GEOMETRY_STRUCT}
@group(0) @binding({{paramsBinding}}) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  let ox = index % params.outW;
  let oy = (index / params.outW) % params.outH;
  let plane = index / (params.outW * params.outH);
  let base = plane * params.h * params.w;
  var best = -3.4028234e38;
  var bestIndex = 0u;
  var total = 0.0;
  for (var ky = 0u; ky < params.kH; ky++) {
    let iy = i32(oy * params.sH + ky) - i32(params.pH);
    if (iy < 0 || iy >= i32(params.h)) { continue; }
    for (var kx = 0u; kx < params.kW; kx++) {
      let ix = i32(ox * params.sW + kx) - i32(params.pW);
      if (ix < 0 || ix >= i32(params.w)) { continue; }
      let position = u32(iy) * params.w + u32(ix);
      let value = input[base + position];
      total += value;
      if (value > best) { best = value; bestIndex = position; }
    }
  }
  {{store}}
}`;

export const AVG_POOL_WGSL = wgsl(POOL_FORWARD_TEMPLATE, {
  argmaxBinding: "",
  paramsBinding: 2,
  store: "output[index] = total / f32(params.kH * params.kW);",
});
export const MAX_POOL_WGSL = wgsl(POOL_FORWARD_TEMPLATE, {
  argmaxBinding: "@group(0) @binding(2) var<storage, read_write> argmax: array<u32>;",
  paramsBinding: 3,
  store: "output[index] = best; argmax[index] = bestIndex;",
});

const POOL_BACKWARD_TEMPLATE = `
@group(0) @binding(0) var<storage, read> gradOutput: array<f32>;
@group(0) @binding(1) var<storage, read_write> gradInput: array<f32>;
{{argmaxBinding}}
${GEOMETRY_STRUCT}
@group(0) @binding({{paramsBinding}}) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  let ix = i32(index % params.w);
  let iy = i32((index / params.w) % params.h);
  let plane = index / (params.w * params.h);
  let position = u32(iy) * params.w + u32(ix);
  // Windows covering (iy, ix): oy * sH - pH <= iy < oy * sH - pH + kH.
  let yFirst = max(0, (iy + i32(params.pH) - i32(params.kH) + i32(params.sH)) / i32(params.sH));
  let yLast = min(i32(params.outH) - 1, (iy + i32(params.pH)) / i32(params.sH));
  let xFirst = max(0, (ix + i32(params.pW) - i32(params.kW) + i32(params.sW)) / i32(params.sW));
  let xLast = min(i32(params.outW) - 1, (ix + i32(params.pW)) / i32(params.sW));
  var total = 0.0;
  for (var oy = yFirst; oy <= yLast; oy++) {
    for (var ox = xFirst; ox <= xLast; ox++) {
      let outIndex = (plane * params.outH + u32(oy)) * params.outW + u32(ox);
      {{accumulate}}
    }
  }
  gradInput[index] = total;
}`;

export const AVG_POOL_BACKWARD_WGSL = wgsl(POOL_BACKWARD_TEMPLATE, {
  argmaxBinding: "",
  paramsBinding: 2,
  accumulate: "total += gradOutput[outIndex] / f32(params.kH * params.kW);",
});
export const MAX_POOL_BACKWARD_WGSL = wgsl(POOL_BACKWARD_TEMPLATE, {
  argmaxBinding: "@group(0) @binding(2) var<storage, read> argmax: array<u32>;",
  paramsBinding: 3,
  accumulate: "if (argmax[outIndex] == position) { total += gradOutput[outIndex]; }",
});

function pool(kind: "avg" | "max", x: Tensor, options: Pool2dOptions): Tensor {
  const op = kind === "avg" ? "avgPool2d" : "maxPool2d";
  if (x.dtype !== "f32") throw new OpError(op, `needs f32 input, got ${x.dtype}`, { x });
  const g = poolGeometry(op, x.shape, options);
  const output = Tensor.empty(x.gpu, [g.n, g.c, g.outH, g.outW]);
  const argmax = kind === "max" ? Tensor.empty(x.gpu, output.shape, "u32") : null;
  launch(
    x.gpu,
    { name: op, code: kind === "avg" ? AVG_POOL_WGSL : MAX_POOL_WGSL },
    {
      bindings: argmax ? [x, output, argmax] : [x, output],
      params: geometryParams(output.size, g),
      workgroups: grid(output.size, 256),
      flops: output.size * g.kH * g.kW,
      bytes: 4 * (output.size * g.kH * g.kW + output.size),
    },
  );
  if (!needsGrad(x)) {
    argmax?.release();
    return output;
  }
  record(
    op,
    [x],
    [output],
    ([gradOutput]) => {
      const gradInput = Tensor.empty(x.gpu, x.shape);
      launch(
        x.gpu,
        { name: `${op}Backward`, code: kind === "avg" ? AVG_POOL_BACKWARD_WGSL : MAX_POOL_BACKWARD_WGSL },
        {
          bindings: argmax ? [gradOutput!, gradInput, argmax] : [gradOutput!, gradInput],
          params: geometryParams(x.size, g),
          workgroups: grid(x.size, 256),
          flops: output.size * g.kH * g.kW,
          bytes: 4 * (x.size + output.size * 2),
        },
      );
      return [gradInput];
    },
    argmax ? [argmax] : [],
  );
  return output;
}

export const avgPool2d = (x: Tensor, options: Pool2dOptions) => pool("avg", x, options);
export const maxPool2d = (x: Tensor, options: Pool2dOptions) => pool("max", x, options);

/** Mean over H and W: [N, C, H, W] -> [N, C] (DenseNet's final pooling). */
export function globalAvgPool2d(x: Tensor): Tensor {
  if (x.rank !== 4) throw new OpError("globalAvgPool2d", "expects [N, C, H, W]", { x });
  const pooled = pool("avg", x, { kernel: [x.shape[2], x.shape[3]] });
  // The [N, C, 1, 1] result is moved, not copied, into [N, C]; its tape node moves with it.
  const node = pooled.node;
  const flat = pooled.reshapeInto([x.shape[0], x.shape[1]]);
  if (node) {
    node.outputs = [flat];
    flat.requiresGrad = true;
    flat.node = node;
  }
  return flat;
}

/** Float64 references: forward and the gradient with respect to x. */
export const poolReference = {
  forward(kind: "avg" | "max", x: Float64Array, shape: Shape, options: Pool2dOptions): Float64Array {
    const g = poolGeometry("pool", shape, options);
    const output = new Float64Array(g.n * g.c * g.outH * g.outW);
    let index = 0;
    for (let plane = 0; plane < g.n * g.c; plane++) {
      for (let oy = 0; oy < g.outH; oy++) {
        for (let ox = 0; ox < g.outW; ox++) {
          let total = 0;
          let best = Number.NEGATIVE_INFINITY;
          for (let ky = 0; ky < g.kH; ky++) {
            for (let kx = 0; kx < g.kW; kx++) {
              const iy = oy * g.sH + ky - g.pH;
              const ix = ox * g.sW + kx - g.pW;
              if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) continue;
              const value = x[(plane * g.h + iy) * g.w + ix];
              total += value;
              best = Math.max(best, value);
            }
          }
          output[index++] = kind === "avg" ? total / (g.kH * g.kW) : best;
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
    const g = poolGeometry("pool", shape, options);
    const grad = new Float64Array(x.length);
    let index = 0;
    for (let plane = 0; plane < g.n * g.c; plane++) {
      for (let oy = 0; oy < g.outH; oy++) {
        for (let ox = 0; ox < g.outW; ox++) {
          const gy = gradOutput[index++];
          let bestPosition = -1;
          let best = Number.NEGATIVE_INFINITY;
          for (let ky = 0; ky < g.kH; ky++) {
            for (let kx = 0; kx < g.kW; kx++) {
              const iy = oy * g.sH + ky - g.pH;
              const ix = ox * g.sW + kx - g.pW;
              if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) continue;
              const position = (plane * g.h + iy) * g.w + ix;
              if (kind === "avg") grad[position] += gy / (g.kH * g.kW);
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
