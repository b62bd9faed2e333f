/** Float64 reference of cast: rounding to f16 (nearest even, saturating at +-65504) and back. */
import { float16BitsToFloat32, float32ToFloat16Bits } from "../../runtime/tensor.ts";
import { HALF_MAX } from "../common/half.ts";

/** The f16 value nearest to `value` (ties to even), saturated at +-65504, as a number. */
export function roundToHalf(value: number): number {
  if (Number.isNaN(value)) return value;
  const clamped = Math.min(HALF_MAX, Math.max(-HALF_MAX, value));
  // Through f32 first, as the kernels see the value (an f32 input, or an f32 sum rounded once).
  return float16BitsToFloat32(float32ToFloat16Bits(Math.fround(clamped)));
}

/** Every value rounded to f16 (what an f16 tensor uploaded from `values` holds). */
export function roundAllToHalf(values: ArrayLike<number>): Float64Array {
  return Float64Array.from(values as ArrayLike<number>, roundToHalf);
}
