/**
 * Shared checks for kernel tests: GPU result vs float64 CPU reference, and reference gradients vs
 * central finite differences of the reference forward. One helper per idea, so adding an op to a
 * test table is one line (tinygrad's style).
 */
import { defaultGpu, type Gpu, type Shape, sizeOf, Tensor } from "@cxr/kernels";
import { expect } from "vitest";

export const gpu: () => Promise<Gpu> = defaultGpu;

/**
 * Deterministic pseudo-random normal values (mulberry32 + Box-Muller), so failures reproduce.
 * Rounded to float32, so references see exactly the values the GPU sees.
 */
export function randomValues(count: number, seed: number, scale = 1): Float64Array {
  let state = seed >>> 0 || 1;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const values = new Float64Array(count);
  for (let index = 0; index < count; index++) {
    const u = Math.max(next(), 1e-12);
    values[index] = Math.fround(scale * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * next()));
  }
  return values;
}

export interface Tolerance {
  atol: number;
  rtol: number;
}

/** |actual - expected| <= atol + rtol * |expected| everywhere; reports the worst element. */
export function expectClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tolerance: Tolerance,
  label: string,
): void {
  expect(actual.length, `${label}: length`).toBe(expected.length);
  let worst = -1;
  let worstExcess = 0;
  for (let index = 0; index < expected.length; index++) {
    const difference = Math.abs(actual[index] - expected[index]);
    const allowed = tolerance.atol + tolerance.rtol * Math.abs(expected[index]);
    if (!(difference <= allowed) && (worst < 0 || difference - allowed > worstExcess)) {
      worst = index;
      worstExcess = difference - allowed;
    }
  }
  if (worst >= 0) {
    expect.fail(
      `${label}: element ${worst} is ${actual[worst]}, expected ${expected[worst]} (atol ${tolerance.atol}, rtol ${tolerance.rtol})`,
    );
  }
}

/**
 * Gradient of sum(gradOutput * f(inputs)) with respect to inputs[which], by central differences
 * in float64. `f` is an op's CPU reference forward.
 */
export function finiteDifferenceGradient(
  f: (inputs: Float64Array[]) => Float64Array,
  inputs: Float64Array[],
  gradOutput: Float64Array,
  which: number,
  epsilon = 1e-6,
): Float64Array {
  const input = inputs[which];
  const gradient = new Float64Array(input.length);
  const objective = () => {
    const output = f(inputs);
    let total = 0;
    for (let index = 0; index < output.length; index++) total += output[index] * gradOutput[index];
    return total;
  };
  for (let index = 0; index < input.length; index++) {
    const saved = input[index];
    input[index] = saved + epsilon;
    const plus = objective();
    input[index] = saved - epsilon;
    const minus = objective();
    input[index] = saved;
    gradient[index] = (plus - minus) / (2 * epsilon);
  }
  return gradient;
}

export async function upload(
  data: Float64Array | number[],
  shape: Shape,
  trainable = false,
): Promise<Tensor> {
  if (sizeOf(shape) !== data.length)
    throw new Error(`test data has ${data.length} values for shape [${shape}]`);
  const tensor = Tensor.upload(await gpu(), Float32Array.from(data), shape);
  return trainable ? tensor.trainable() : tensor;
}

/** Rounds values to float32, so references see exactly what the GPU sees. */
export function asFloat32(values: Float64Array): Float64Array {
  return Float64Array.from(Float32Array.from(values));
}
