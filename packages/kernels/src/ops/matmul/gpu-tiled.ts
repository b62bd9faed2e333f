/** Variant "gpu-tiled": workgroup-memory tiles, the choice on every GPU adapter. */
import { EPILOGUE_WGSL, STRIDED_PARAMS_WGSL } from "./common.ts";

/**
 * Classic GPU tiling: a workgroup of 16x16 invocations owns a 64x64 output tile; each k-step of 16
 * stages a 64x16 slice of A and a 16x64 slice of B in workgroup memory; each invocation accumulates
 * 4x4 outputs at stride 16, so neighbouring invocations touch neighbouring addresses.
 */
export const MATMUL_GPU_TILED_WGSL = `
${STRIDED_PARAMS_WGSL}
${EPILOGUE_WGSL}
const TILE = 64u;
const DEPTH = 16u;
var<workgroup> tileA: array<array<f32, 64>, 16>;
var<workgroup> tileB: array<array<f32, 64>, 16>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) lane: u32) {
  let tilesN = (params.N + TILE - 1u) / TILE;
  let tilesM = (params.M + TILE - 1u) / TILE;
  let tile = wid.x + wid.y * groups.x;
  if (tile >= params.batch * tilesM * tilesN) { return; }
  let tileColumn = (tile % tilesN) * TILE;
  let tileRow = ((tile / tilesN) % tilesM) * TILE;
  let batch = tile / (tilesN * tilesM);
  let aBase = batch * params.aBatchStride;
  let bBase = batch * params.bBatchStride;
  let laneColumn = lane % 16u;
  let laneRow = lane / 16u;
  var acc: array<vec4<f32>, 4>;
  for (var k0 = 0u; k0 < params.K; k0 += DEPTH) {
    for (var step = 0u; step < 4u; step++) {
      let element = lane + step * 256u;
      let outer = element % TILE;
      let depth = element / TILE;
      let k = k0 + depth;
      var aValue = 0.0;
      if (tileRow + outer < params.M && k < params.K) {
        aValue = a[aBase + (tileRow + outer) * params.aRowStride + k * params.aDepthStride];
      }
      tileA[depth][outer] = aValue;
      var bValue = 0.0;
      if (tileColumn + outer < params.N && k < params.K) {
        bValue = b[bBase + (tileColumn + outer) * params.bColumnStride + k * params.bDepthStride];
      }
      tileB[depth][outer] = bValue;
    }
    workgroupBarrier();
    for (var depth = 0u; depth < DEPTH; depth++) {
      let bValues = vec4<f32>(tileB[depth][laneColumn], tileB[depth][laneColumn + 16u],
                              tileB[depth][laneColumn + 32u], tileB[depth][laneColumn + 48u]);
      for (var i = 0u; i < 4u; i++) { acc[i] += tileA[depth][laneRow + 16u * i] * bValues; }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let row = tileRow + laneRow + 16u * i;
    for (var j = 0u; j < 4u; j++) {
      let column = tileColumn + laneColumn + 16u * j;
      if (row < params.M && column < params.N) {
        storeOutput((batch * params.M + row) * params.N + column, column, acc[i][j]);
      }
    }
  }
}`;
