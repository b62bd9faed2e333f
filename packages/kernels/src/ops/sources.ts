/**
 * The WGSL of every op family in the per-op layout (ops/<op>/), by variant and pass, exactly the
 * strings `launch` compiles: what `cxr kernels dump <op>` prints. Every op family registers here,
 * the f16 kernels (half.ts in each op folder) as variant "f16" and the f32 <-> f16 casts as "cast".
 */
import { ATTENTION_HALF_WGSL } from "./attention/half.ts";
import { ATTENTION_PASSES } from "./attention/index.ts";
import { BATCH_NORM_KERNELS } from "./batchnorm/index.ts";
import { BINARY_HALF_KERNELS } from "./binary/half.ts";
import { BINARY_KERNELS } from "./binary/index.ts";
import { CAST_KERNELS } from "./cast/index.ts";
import { CONV2D_HALF_WGSL } from "./conv2d/half.ts";
import { CONV2D_KERNELS } from "./conv2d/index.ts";
import { CROSS_ENTROPY_KERNELS } from "./crossentropy/index.ts";
import { EMBEDDING_HALF_WGSL, EMBEDDING_KERNELS } from "./embedding/index.ts";
import { GROUP_NORM_HALF_KERNELS } from "./groupnorm/half.ts";
import { GROUP_NORM_KERNELS } from "./groupnorm/index.ts";
import { IM2COL_KERNELS } from "./im2col/index.ts";
import { LAYER_NORM_HALF_KERNELS } from "./layernorm/half.ts";
import { LAYER_NORM_KERNELS } from "./layernorm/index.ts";
import { LAYOUT_HALF_KERNELS } from "./layout/half.ts";
import { LAYOUT_KERNELS } from "./layout/index.ts";
import { LOSS_KERNELS } from "./loss/index.ts";
import { MATMUL_HALF_WGSL } from "./matmul/half.ts";
import { MATMUL_KERNELS } from "./matmul/index.ts";
import { OPTIM_KERNELS } from "./optim/index.ts";
import { POOL_KERNELS } from "./pooling/index.ts";
import { RANDOM_KERNELS } from "./random/index.ts";
import { REDUCE_KERNELS } from "./reduce/index.ts";
import { SOFTMAX_HALF_WGSL, SOFTMAX_KERNELS } from "./softmax/index.ts";
import { TIMESTEP_KERNELS } from "./timestep/index.ts";
import { UNARY_HALF_KERNELS } from "./unary/half.ts";
import { UNARY_KERNELS } from "./unary/index.ts";

export type KernelPasses = Readonly<Record<string, string>>;

/** The variant name of every family's half-precision kernels (each op folder's half.ts). */
export const HALF_VARIANT = "f16";

export const KERNEL_SOURCES: Readonly<Record<string, Readonly<Record<string, KernelPasses>>>> = {
  softmax: {
    ...Object.fromEntries(
      Object.entries(SOFTMAX_KERNELS).map(([variant, kernels]) => [
        variant,
        { forward: kernels.forward, backward: kernels.backward },
      ]),
    ),
    f16: { forward: SOFTMAX_HALF_WGSL },
  },
  reduce: REDUCE_KERNELS,
  groupNorm: { ...GROUP_NORM_KERNELS, f16: GROUP_NORM_HALF_KERNELS },
  layerNorm: { ...LAYER_NORM_KERNELS, f16: LAYER_NORM_HALF_KERNELS },
  batchNorm2d: BATCH_NORM_KERNELS,
  attention: {
    ...ATTENTION_PASSES,
    f16: { forward: ATTENTION_HALF_WGSL },
  },
  matmul: { ...MATMUL_KERNELS, f16: { forward: MATMUL_HALF_WGSL } },
  conv2d: { ...CONV2D_KERNELS, f16: { forward: CONV2D_HALF_WGSL } },
  im2col: IM2COL_KERNELS,
  pooling: POOL_KERNELS,
  timestep: TIMESTEP_KERNELS,
  embedding: { ...EMBEDDING_KERNELS, f16: { forward: EMBEDDING_HALF_WGSL } },
  unary: { ...UNARY_KERNELS, f16: UNARY_HALF_KERNELS },
  binary: { ...BINARY_KERNELS, f16: BINARY_HALF_KERNELS },
  crossentropy: CROSS_ENTROPY_KERNELS,
  loss: LOSS_KERNELS,
  layout: { ...LAYOUT_KERNELS, f16: LAYOUT_HALF_KERNELS },
  cast: CAST_KERNELS,
  random: RANDOM_KERNELS,
  optim: OPTIM_KERNELS,
};

export interface DumpRequest {
  op: string;
  variant?: string;
  pass?: string;
}

/**
 * The requested sources, each under a `// op / variant / pass` header and byte for byte as compiled
 * (after the header's line break); errors name what exists.
 */
export function dumpKernelSources({ op, variant, pass }: DumpRequest): string {
  const family = KERNEL_SOURCES[op];
  if (!family) {
    throw new Error(`kernels dump: no op "${op}" (available ops: ${Object.keys(KERNEL_SOURCES).join(", ")})`);
  }
  if (variant !== undefined && !(variant in family)) {
    throw new Error(
      `kernels dump: ${op} has no variant "${variant}" (variants: ${Object.keys(family).join(", ")})`,
    );
  }
  const parts: string[] = [];
  for (const [name, passes] of Object.entries(family)) {
    if (variant !== undefined && name !== variant) continue;
    // The f16 (half precision) variants print only when asked for: `--variant f16`.
    if (variant === undefined && name === HALF_VARIANT) continue;
    if (pass !== undefined && !(pass in passes)) {
      throw new Error(
        `kernels dump: ${op} has no pass "${pass}" (passes: ${Object.keys(passes).join(", ")})`,
      );
    }
    for (const [passName, code] of Object.entries(passes)) {
      if (pass !== undefined && passName !== pass) continue;
      // A source that starts with a directive (`enable ...;`) gets its own line after the header.
      parts.push(`// ${op} / ${name} / ${passName}${code.startsWith("\n") ? "" : "\n"}${code}\n`);
    }
  }
  return parts.join("\n");
}
