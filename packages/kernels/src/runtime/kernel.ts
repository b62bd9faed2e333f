/**
 * Launching a kernel: look up (or compile) its pipeline, bind tensors in declaration order
 * (binding 0, 1, ...; the uniform block, if any, last), record the dispatch into the current batch,
 * and count it in the profiler. Nothing is submitted here; `gpu.flush()` or a download does that.
 */
import type { Gpu } from "./device.ts";
import { OpError, Tensor } from "./tensor.ts";
import type { Params } from "./uniforms.ts";
import { markWritten, writableBindingsOf } from "./versions.ts";

export interface KernelSource {
  /** Op name as shown in the profiler, e.g. "conv2d". */
  name: string;
  /** Variant name, e.g. "gpu-tiled" or "cpu-wide"; "default" when there is only one. */
  variant?: string;
  /** WGSL source. Must use every binding it declares (pipelines use layout "auto"). */
  code: string;
  entryPoint?: string;
}

export interface Launch {
  /** Bound to @binding(0), (1), ... in this order. */
  bindings: (Tensor | GPUBindingResource)[];
  params?: Params;
  workgroups: readonly [number, number?, number?];
  /** Floating-point operations of this dispatch (multiply-add = 2). */
  flops: number;
  /** Bytes read plus written, at least once each. */
  bytes: number;
}

export function launch(gpu: Gpu, kernel: KernelSource, run: Launch): void {
  const variant = kernel.variant ?? "default";
  const pipeline = gpu.pipeline(kernel.code, `${kernel.name}/${variant}`, kernel.entryPoint);
  const [x, y = 1, z = 1] = run.workgroups;
  const maximum = gpu.limits.maxComputeWorkgroupsPerDimension;
  if (x > maximum || y > maximum || z > maximum) {
    throw new OpError(
      kernel.name,
      `dispatch of ${x}x${y}x${z} workgroups exceeds the adapter limit ${maximum}`,
    );
  }
  if (x === 0 || y === 0 || z === 0) return;
  // Every buffer the kernel may write gets a new write version (runtime/versions.ts): tensors through
  // `bufferFor("write")`, buffers passed as raw resources directly.
  const writable = writableBindingsOf(kernel.code);
  const entries: GPUBindGroupEntry[] = run.bindings.map((binding, index) => {
    if (binding instanceof Tensor) {
      return {
        binding: index,
        resource: { buffer: binding.bufferFor(writable.has(index) ? "write" : "read") },
      };
    }
    const written = writable.has(index) ? bufferOf(binding) : null;
    if (written) markWritten(written);
    return { binding: index, resource: binding };
  });
  if (run.params) entries.push({ binding: entries.length, resource: gpu.uniforms.allocate(run.params) });
  const bindGroup = gpu.device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
  const encoder = gpu.commandEncoder();
  const timestampWrites = gpu.profiler.record(kernel.name, variant, run.flops, run.bytes);
  const pass = encoder.beginComputePass(timestampWrites ? { timestampWrites } : {});
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, bindGroup);
  pass.dispatchWorkgroups(x, y, z);
  pass.end();
  gpu.maybeFlush();
}

/** The buffer a raw binding resource names (a GPUBufferBinding or a GPUBuffer), else null. */
function bufferOf(resource: GPUBindingResource): GPUBuffer | null {
  if ("buffer" in resource) return resource.buffer;
  if ("mapAsync" in resource) return resource;
  return null;
}

/**
 * Workgroup counts for `invocations` threads of `workgroupSize`, folded into two dimensions when
 * one would exceed the 65535 limit. Kernels recover the linear index with `linearIndex()` below.
 */
export function grid(invocations: number, workgroupSize: number): [number, number, number] {
  const groups = Math.max(1, Math.ceil(invocations / workgroupSize));
  if (groups <= 65535) return [groups, 1, 1];
  const x = 65535;
  return [x, Math.ceil(groups / x), 1];
}

/** WGSL helper matching `grid()`: the flat invocation index. */
export const LINEAR_INDEX_WGSL = `
fn linearIndex(gid: vec3<u32>, groups: vec3<u32>, workgroupSize: u32) -> u32 {
  return gid.x + gid.y * groups.x * workgroupSize;
}`;

/** Fills `{{name}}` placeholders in WGSL templates; a missing value is an error, not an empty string. */
export function wgsl(template: string, values: Record<string, string | number>): string {
  return template.replace(/\{\{(\w+)\}\}/g, (_, name: string) => {
    if (!(name in values)) throw new Error(`WGSL template placeholder {{${name}}} has no value`);
    return String(values[name]);
  });
}
