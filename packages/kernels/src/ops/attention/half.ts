/**
 * attention's f16 variant (inference only): f16 q, k, v and output; the scores, the softmax and the
 * weighted sum of values in f32. One invocation per (batch, head, query row) keeps the query row and
 * an output accumulator in f32 registers (head dimension up to 256) and streams the keys once with an
 * online softmax (running maximum m and sum l; when m grows, l and the accumulator are rescaled by
 * exp(m_old - m_new)), then divides by l and rounds each output value to f16 once. keyMask stays f32
 * ([B, Lk], 1 keep, 0 drop); a query whose keys are all dropped outputs zeros, as in the f32 kernels.
 */
import { grid, LINEAR_INDEX_WGSL, launch } from "../../runtime/kernel.ts";
import { OpError, Tensor } from "../../runtime/tensor.ts";
import { Params } from "../../runtime/uniforms.ts";
import { checkHalfOperands, HALF_PRELUDE_WGSL } from "../common/half.ts";
import { MAX_ATTENTION_HEAD_DIM } from "./common.ts";

export const ATTENTION_HALF_WGSL = `${HALF_PRELUDE_WGSL}
@group(0) @binding(0) var<storage, read> q: array<f16>;
@group(0) @binding(1) var<storage, read> k: array<f16>;
@group(0) @binding(2) var<storage, read> v: array<f16>;
@group(0) @binding(3) var<storage, read> keyMask: array<f32>;
@group(0) @binding(4) var<storage, read_write> o: array<f16>;
struct Params { rows: u32, heads: u32, queryLength: u32, keyLength: u32, headDim: u32, hasMask: u32, scale: f32 }
@group(0) @binding(5) var<uniform> p: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let row = linearIndex(gid, groups, 64u);
  if (row >= p.rows) { return; }
  let D = p.headDim;
  let batchHead = row / p.queryLength;
  let batch = batchHead / p.heads;
  var query: array<f32, ${MAX_ATTENTION_HEAD_DIM}>;
  var acc: array<f32, ${MAX_ATTENTION_HEAD_DIM}>;
  for (var d = 0u; d < D; d++) {
    query[d] = f32(q[row * D + d]) * p.scale;
    acc[d] = 0.0;
  }
  var m = -3.0e38;
  var l = 0.0;
  for (var key = 0u; key < p.keyLength; key++) {
    if (p.hasMask != 0u && keyMask[batch * p.keyLength + key] == 0.0) { continue; }
    let kv = (batchHead * p.keyLength + key) * D;
    var score = 0.0;
    for (var d = 0u; d < D; d++) { score += query[d] * f32(k[kv + d]); }
    let mNew = max(m, score);
    let correction = exp(m - mNew);
    let weight = exp(score - mNew);
    l = l * correction + weight;
    for (var d = 0u; d < D; d++) { acc[d] = acc[d] * correction + weight * f32(v[kv + d]); }
    m = mNew;
  }
  let inverse = select(0.0, 1.0 / l, l > 0.0);
  for (var d = 0u; d < D; d++) { o[row * D + d] = toHalf(acc[d] * inverse); }
}`;

export interface AttentionHalfOptions {
  scale?: number;
  keyMask?: Tensor;
}

/** softmax(scale q k^T, masked) v for f16 q [B, H, Lq, D], k and v [B, H, Lk, D]. */
export function attentionHalf(q: Tensor, k: Tensor, v: Tensor, options: AttentionHalfOptions = {}): Tensor {
  const gpu = checkHalfOperands("attention", { q, k, v });
  for (const [name, tensor] of [
    ["q", q],
    ["k", k],
    ["v", v],
  ] as const) {
    if (tensor.rank !== 4)
      throw new OpError("attention", `${name} must be [batch, heads, length, headDim]`, { q, k, v });
  }
  const [batch, heads, queryLength, headDim] = q.shape;
  const keyLength = k.shape[2];
  if (k.shape[0] !== batch || k.shape[1] !== heads || k.shape[3] !== headDim) {
    throw new OpError("attention", "k must match q in batch, heads and head dimension", { q, k });
  }
  if (v.shape.some((dim, axis) => dim !== k.shape[axis])) {
    throw new OpError("attention", "v must have the shape of k", { k, v });
  }
  if (headDim > MAX_ATTENTION_HEAD_DIM) {
    throw new OpError(
      "attention",
      `head dimension ${headDim} exceeds the supported maximum ${MAX_ATTENTION_HEAD_DIM}`,
      { q, k },
    );
  }
  const scale = options.scale ?? 1 / Math.sqrt(headDim);
  if (!Number.isFinite(scale)) throw new OpError("attention", `scale must be finite, got ${scale}`, { q });
  const keyMask = options.keyMask;
  if (keyMask) {
    if (keyMask.dtype !== "f32")
      throw new OpError("attention", `needs an f32 keyMask, got ${keyMask.dtype}`, { keyMask });
    if (keyMask.rank !== 2 || keyMask.shape[0] !== batch || keyMask.shape[1] !== keyLength) {
      throw new OpError("attention", "keyMask must be [batch, keyLength]", { q, k, keyMask });
    }
  }
  const rows = batch * heads * queryLength;
  const output = Tensor.empty(gpu, q.shape, "f16");
  launch(
    gpu,
    { name: "attention", variant: "f16", code: ATTENTION_HALF_WGSL },
    {
      // Without a mask the mask slot binds q's buffer, never read (hasMask 0).
      bindings: [q, k, v, keyMask ?? q, output],
      params: new Params().u32(rows, heads, queryLength, keyLength, headDim, keyMask ? 1 : 0).f32(scale),
      workgroups: grid(rows, 64),
      flops: 4 * rows * keyLength * headDim,
      bytes: 2 * (q.size + k.size + v.size + output.size),
    },
  );
  return output;
}
