/**
 * The placeholders the norm kernels' WGSL templates take: loads of 4 floats (vec4, rows whose length
 * is a multiple of 4) or of 1, with the matching horizontal sum, and how many loads make the 16 values
 * of the shifted-sums pilot.
 */
export const VECTOR_TYPES = {
  4: { vector: "vec4<f32>", lanes: 4, horizontalSum: "v.x + v.y + v.z + v.w", pilotLoads: 4 },
  1: { vector: "f32", lanes: 1, horizontalSum: "v", pilotLoads: 16 },
} as const;

/** Elements per load: 4 (vec4) when rows start on 16-byte boundaries, else 1. */
export function lanesFor(rowLength: number): 4 | 1 {
  return rowLength % 4 === 0 ? 4 : 1;
}

/** The name of a load width in pass names (`cxr kernels dump`). */
export const LANE_NAMES = { 4: "vec4", 1: "scalar" } as const;
