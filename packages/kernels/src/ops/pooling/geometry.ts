/** The window of a pooling: the shared window geometry with pooling's defaults and padding rule. */
import type { Shape, Tensor } from "../../runtime/tensor.ts";
import { OpError } from "../../runtime/tensor.ts";
import { type Pair, type Window2d, window2d } from "../common/window.ts";

export interface Pool2dOptions {
  kernel: Pair;
  /** Defaults to the kernel size. */
  stride?: Pair;
  padding?: Pair;
}

/**
 * Validates a pooling over `shape` ([N, C, H, W]): stride defaults to the kernel, and padding may be at
 * most half the kernel (PyTorch's rule: every window then covers at least one real pixel).
 */
export function poolWindow(
  op: string,
  shape: Shape,
  options: Pool2dOptions,
  operands: Readonly<Record<string, Shape | Tensor>> = { x: shape },
): Window2d {
  const g = window2d(
    op,
    shape,
    options.kernel,
    { stride: options.stride ?? options.kernel, padding: options.padding },
    operands,
  );
  if (g.padH * 2 > g.kernelHeight || g.padW * 2 > g.kernelWidth) {
    throw new OpError(
      op,
      `padding (${g.padH}, ${g.padW}) must be between 0 and half the kernel (${g.kernelHeight}, ${g.kernelWidth})`,
      operands,
    );
  }
  return g;
}
