/**
 * The WGSL of every op family in the per-op layout (ops/<op>/), by variant and pass, exactly the
 * strings `launch` compiles: what `cxr kernels dump <op>` prints. Families still in one file
 * (matmul, conv2d, attention, norms, ...) join when they move to their folder.
 */
import { BINARY_KERNELS } from "./binary/index.ts";
import { CROSS_ENTROPY_KERNELS } from "./crossentropy/index.ts";
import { EMBEDDING_KERNELS } from "./embedding/index.ts";
import { LAYOUT_KERNELS } from "./layout/index.ts";
import { LOSS_KERNELS } from "./loss/index.ts";
import { OPTIM_KERNELS } from "./optim/index.ts";
import { RANDOM_KERNELS } from "./random/index.ts";
import { SOFTMAX_KERNELS } from "./softmax/index.ts";
import { TIMESTEP_KERNELS } from "./timestep/index.ts";
import { UNARY_KERNELS } from "./unary/index.ts";

export type KernelPasses = Readonly<Record<string, string>>;

export const KERNEL_SOURCES: Readonly<Record<string, Readonly<Record<string, KernelPasses>>>> = {
  softmax: Object.fromEntries(
    Object.entries(SOFTMAX_KERNELS).map(([variant, kernels]) => [
      variant,
      { forward: kernels.forward, backward: kernels.backward },
    ]),
  ),
  timestep: TIMESTEP_KERNELS,
  embedding: EMBEDDING_KERNELS,
  unary: UNARY_KERNELS,
  binary: BINARY_KERNELS,
  crossentropy: CROSS_ENTROPY_KERNELS,
  loss: LOSS_KERNELS,
  layout: LAYOUT_KERNELS,
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
 * (they begin with a newline); errors name what exists.
 */
export function dumpKernelSources({ op, variant, pass }: DumpRequest): string {
  const family = KERNEL_SOURCES[op];
  if (!family) {
    throw new Error(
      `kernels dump: no op "${op}" in the per-op layout yet (available: ${Object.keys(KERNEL_SOURCES).join(", ")})`,
    );
  }
  if (variant !== undefined && !(variant in family)) {
    throw new Error(
      `kernels dump: ${op} has no variant "${variant}" (variants: ${Object.keys(family).join(", ")})`,
    );
  }
  const parts: string[] = [];
  for (const [name, passes] of Object.entries(family)) {
    if (variant !== undefined && name !== variant) continue;
    if (pass !== undefined && !(pass in passes)) {
      throw new Error(
        `kernels dump: ${op} has no pass "${pass}" (passes: ${Object.keys(passes).join(", ")})`,
      );
    }
    for (const [passName, code] of Object.entries(passes)) {
      if (pass !== undefined && passName !== pass) continue;
      parts.push(`// ${op} / ${name} / ${passName}${code}\n`);
    }
  }
  return parts.join("\n");
}
