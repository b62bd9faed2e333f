/**
 * conv2d's f16 variant (inference only): f16 input, weights, bias and output, f32 accumulation.
 * Direct convolution without packing: each invocation owns one output channel of one image and 4
 * consecutive output pixels of a row, and per tap (input channel of its group, ky, kx) widens one
 * weight and 4 input values to f32 for 4 multiply-adds; taps that fall in the padding read zero. The
 * bias is added in f32 and each output is rounded to f16 once. Any stride, padding, dilation and
 * groups (geometry.ts checks them, as for the f32 variants).
 */
import { grid, LINEAR_INDEX_WGSL, launch } from "../../runtime/kernel.ts";
import { OpError, Tensor } from "../../runtime/tensor.ts";
import { checkHalfOperands, HALF_PRELUDE_WGSL } from "../common/half.ts";
import { conv2dCost } from "./cost.ts";
import {
  type Conv2dOptions,
  conv2dGeometry,
  conv2dOutputShape,
  GEOMETRY_FIELDS,
  geometryParams,
} from "./geometry.ts";

export const CONV2D_HALF_WGSL = `${HALF_PRELUDE_WGSL}
@group(0) @binding(0) var<storage, read> x: array<f16>;
@group(0) @binding(1) var<storage, read> w: array<f16>;
@group(0) @binding(2) var<storage, read> bias: array<f16>;
@group(0) @binding(3) var<storage, read_write> y: array<f16>;
struct Params { ${GEOMETRY_FIELDS}, hasBias: u32 }
@group(0) @binding(4) var<uniform> p: Params;
${LINEAR_INDEX_WGSL}

// x[n, channel, iy, ix] widened to f32, zero outside the image.
fn inputAt(plane: u32, iy: i32, ix: i32) -> f32 {
  if (iy < 0 || iy >= i32(p.H) || ix < 0 || ix >= i32(p.W)) { return 0.0; }
  return f32(x[plane + u32(iy) * p.W + u32(ix)]);
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 64u);
  let quads = (p.OW + 3u) / 4u;
  if (index >= p.N * p.O * p.OH * quads) { return; }
  let ox0 = (index % quads) * 4u;
  let oy = (index / quads) % p.OH;
  let o = (index / (quads * p.OH)) % p.O;
  let n = index / (quads * p.OH * p.O);
  let firstChannel = (o / p.Og) * p.Cg;
  var sum = vec4<f32>(0.0);
  for (var c = 0u; c < p.Cg; c++) {
    let plane = (n * p.C + firstChannel + c) * p.H * p.W;
    for (var ky = 0u; ky < p.kH; ky++) {
      let iy = i32(oy * p.sH + ky * p.dH) - i32(p.pH);
      for (var kx = 0u; kx < p.kW; kx++) {
        let weight = f32(w[((o * p.Cg + c) * p.kH + ky) * p.kW + kx]);
        let ix = i32(ox0 * p.sW + kx * p.dW) - i32(p.pW);
        let step = i32(p.sW);
        let inputs = vec4<f32>(inputAt(plane, iy, ix), inputAt(plane, iy, ix + step),
                               inputAt(plane, iy, ix + 2 * step), inputAt(plane, iy, ix + 3 * step));
        sum += weight * inputs;
      }
    }
  }
  if (p.hasBias != 0u) { sum += vec4<f32>(f32(bias[o])); }
  let row = ((n * p.O + o) * p.OH + oy) * p.OW;
  for (var j = 0u; j < 4u; j++) {
    if (ox0 + j < p.OW) { y[row + ox0 + j] = toHalf(sum[j]); }
  }
}`;

/** conv2d on f16 x, w (and bias); the same options and output shape as the f32 variants. */
export function conv2dHalf(x: Tensor, w: Tensor, bias: Tensor | null, options: Conv2dOptions): Tensor {
  const gpu = checkHalfOperands("conv2d", { x, w, bias });
  if (options.variant !== undefined) {
    throw new OpError("conv2d", `variant "${options.variant}" is f32 only; f16 input runs the f16 variant`, {
      x,
      w,
    });
  }
  const g = conv2dGeometry("conv2d", x.shape, w.shape, options);
  if (bias && (bias.rank !== 1 || bias.shape[0] !== g.outChannels)) {
    throw new OpError("conv2d", `bias must be [${g.outChannels}]`, { x, w, bias });
  }
  const y = Tensor.empty(gpu, conv2dOutputShape(g), "f16");
  const cost = conv2dCost(g);
  const invocations = g.batch * g.outChannels * g.outHeight * Math.ceil(g.outWidth / 4);
  launch(
    gpu,
    { name: "conv2d", variant: "f16", code: CONV2D_HALF_WGSL },
    {
      bindings: [x, w, bias ?? w, y],
      params: geometryParams(g).u32(bias ? 1 : 0),
      workgroups: grid(invocations, 64),
      flops: cost.flops,
      bytes: cost.bytes / 2,
    },
  );
  return y;
}
