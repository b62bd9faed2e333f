/**
 * Statistics of variant "cpu-chunked" (the CPU adapter): each invocation reads one contiguous chunk
 * of a row once, no workgroup memory. Partials [rows * chunks, 3] = count, mean, M2; merged by
 * statistics-combine.ts.
 */
import { LINEAR_INDEX_WGSL, wgsl } from "../../runtime/kernel.ts";
import { VECTOR_TYPES } from "./vectors.ts";

/**
 * Per (row, chunk): count, mean and sum of squared deviations (M2) of the chunk, in one read.
 * Sums are taken about a shift K, the mean of the chunk's first 16 values (the "shifted data"
 * algorithm), so a common offset cancels exactly; M2 = Σ(x-K)² - (Σ(x-K))²/n loses bits only when
 * K lies far from the chunk mean, and when that puts more than 1 bit at risk the chunk is re-read
 * and M2 computed about its exact mean (two-pass). Chunks are then merged with Chan et al.'s
 * parallel formula. On lavapipe this one-read form measured ~2x faster than two passes per chunk.
 */
const MOMENTS_CHUNKED_TEMPLATE = `
@group(0) @binding(0) var<storage, read> x: array<{{vector}}>;
@group(0) @binding(1) var<storage, read_write> partials: array<f32>;
struct Params { rows: u32, rowUnits: u32, chunks: u32, chunkUnits: u32 }
@group(0) @binding(2) var<uniform> params: Params;
fn horizontalSum(v: {{vector}}) -> f32 { return {{horizontalSum}}; }
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 64u);
  if (index >= params.rows * params.chunks) { return; }
  let row = index / params.chunks;
  let chunk = index % params.chunks;
  let rowStart = row * params.rowUnits;
  let begin = rowStart + chunk * params.chunkUnits;
  let end = rowStart + min((chunk + 1u) * params.chunkUnits, params.rowUnits);
  // Shift: the mean of the chunk's first 16 values (a pilot estimate of the mean; reread from cache).
  let pilotEnd = min(begin + {{pilotLoads}}u, end);
  var pilot = {{vector}}(0.0);
  for (var i = begin; i < pilotEnd; i++) { pilot += x[i]; }
  let shift = horizontalSum(pilot) / f32((pilotEnd - begin) * {{lanes}}u);
  var sum = {{vector}}(0.0);
  var squares = {{vector}}(0.0);
  // Blocks of 64 loads summed apart, then added: rounding grows with 64 + n/64 terms, not n.
  for (var block = begin; block < end; block += 64u) {
    var blockSum = {{vector}}(0.0);
    var blockSquares = {{vector}}(0.0);
    for (var i = block; i < min(block + 64u, end); i++) {
      let deviation = x[i] - shift;
      blockSum += deviation;
      blockSquares += deviation * deviation;
    }
    sum += blockSum;
    squares += blockSquares;
  }
  let count = f32((end - begin) * {{lanes}}u);
  let shiftedSum = horizontalSum(sum);
  let shiftedSquares = horizontalSum(squares);
  let mean = shift + shiftedSum / count;
  let offsetPart = shiftedSum * shiftedSum / count;
  var m2 = max(shiftedSquares - offsetPart, 0.0);
  if (offsetPart > 0.5 * shiftedSquares) {
    var centered = {{vector}}(0.0);
    for (var i = begin; i < end; i++) {
      let deviation = x[i] - mean;
      centered += deviation * deviation;
    }
    m2 = horizontalSum(centered);
  }
  partials[3u * index] = count;
  partials[3u * index + 1u] = mean;
  partials[3u * index + 2u] = m2;
}`;

export const momentsChunkedSource = (lanes: 4 | 1) => wgsl(MOMENTS_CHUNKED_TEMPLATE, VECTOR_TYPES[lanes]);
