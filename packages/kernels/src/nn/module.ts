/**
 * Modules own named parameters and buffers. Names are module paths joined by dots
 * ("down_blocks.0.resnets.1.conv1.weight"), the same names PyTorch's state_dict uses, so a published
 * checkpoint maps 1:1 onto our modules and our safetensors files load in PyTorch.
 */

import { randomReference } from "../ops/random/index.ts";
import type { Gpu } from "../runtime/device.ts";
import { formatShape, type Shape, sizeOf, Tensor } from "../runtime/tensor.ts";
import { readSafetensors, type TensorToWrite, writeSafetensors } from "./safetensors.ts";

/**
 * Seeded parameter initialisation on the CPU (Philox stream, reproducible across runs and devices).
 * Each request takes the next block of the stream.
 */
export class ParameterInit {
  private offset = 0;
  constructor(readonly seed = 0) {}

  /** Uniform values in [-bound, bound). */
  uniform(count: number, bound: number): Float32Array {
    const draws = randomReference.uniform(count, this.seed, this.offset);
    this.offset += Math.ceil(count / 4) * 4;
    return Float32Array.from(draws, (u) => (2 * u - 1) * bound);
  }

  /** Normal values with mean 0 and the given standard deviation. */
  normal(count: number, std: number): Float32Array {
    const draws = randomReference.normal(count, this.seed, this.offset, 0, std);
    this.offset += Math.ceil(count / 4) * 4;
    return Float32Array.from(draws);
  }
}

export class ModuleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ModuleError";
  }
}

/** The dtype new parameters are stored in; set only inside `withParameterDtype`. */
let parameterDtype: "f32" | "f16" = "f32";

/**
 * Builds modules whose parameters are stored as `dtype` (buffers stay f32): `withParameterDtype("f16",
 * () => new UNet2DConditionModel(...))` gives a half-precision model that never holds f32 weights on
 * the GPU (its initial values and `loadState` / `load` values are rounded to f16 as they are
 * written). f16 parameters are not trainable: the f16 kernels are inference only. Needs `shader-f16`.
 */
export function withParameterDtype<T>(dtype: "f32" | "f16", build: () => T): T {
  if (dtype !== "f32" && dtype !== "f16")
    throw new ModuleError(`parameter dtype must be f32 or f16, got ${dtype}`);
  const previous = parameterDtype;
  parameterDtype = dtype;
  try {
    return build();
  } finally {
    parameterDtype = previous;
  }
}

export abstract class Module {
  private readonly parameters_ = new Map<string, Tensor>();
  private readonly buffers_ = new Map<string, Tensor>();
  private readonly children_ = new Map<string, Module>();
  training = true;

  constructor(readonly gpu: Gpu) {}

  /** Registers a trainable parameter under `name`. */
  protected parameter(name: string, shape: Shape, values: Float32Array): Tensor {
    const tensor = Tensor.upload(this.gpu, values, shape, parameterDtype).retain();
    if (parameterDtype === "f32") tensor.trainable();
    this.parameters_.set(name, tensor);
    return tensor;
  }

  /** Registers a non-trainable state tensor (e.g. batch-norm running statistics). */
  protected buffer(name: string, shape: Shape, values: Float32Array): Tensor {
    const tensor = Tensor.upload(this.gpu, values, shape).retain();
    this.buffers_.set(name, tensor);
    return tensor;
  }

  protected child<M extends Module>(name: string, module: M): M {
    this.children_.set(name, module);
    return module;
  }

  namedParameters(prefix = ""): Map<string, Tensor> {
    const result = new Map<string, Tensor>();
    for (const [name, tensor] of this.parameters_) result.set(prefix + name, tensor);
    for (const [name, module] of this.children_) {
      for (const [childName, tensor] of module.namedParameters(`${prefix}${name}.`))
        result.set(childName, tensor);
    }
    return result;
  }

  namedBuffers(prefix = ""): Map<string, Tensor> {
    const result = new Map<string, Tensor>();
    for (const [name, tensor] of this.buffers_) result.set(prefix + name, tensor);
    for (const [name, module] of this.children_) {
      for (const [childName, tensor] of module.namedBuffers(`${prefix}${name}.`))
        result.set(childName, tensor);
    }
    return result;
  }

  parameters(): Tensor[] {
    return [...this.namedParameters().values()];
  }

  /** Parameters and buffers: everything a checkpoint holds. */
  stateTensors(): Map<string, Tensor> {
    return new Map([...this.namedParameters(), ...this.namedBuffers()]);
  }

  parameterCount(): number {
    return this.parameters().reduce((total, tensor) => total + tensor.size, 0);
  }

  /** Training mode (batch statistics) or evaluation mode (running statistics), recursively. */
  train(training = true): this {
    this.training = training;
    for (const module of this.children_.values()) module.train(training);
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  /**
   * Loads named tensors. With `strict`, missing and unexpected names are errors; shapes must always
   * match. All problems are collected and reported together, and nothing is changed unless all pass.
   */
  loadState(
    tensors: Map<string, { shape: readonly number[]; data: Float32Array }>,
    strict = true,
    source = "state",
  ): void {
    const own = this.stateTensors();
    const problems: string[] = [];
    for (const [name, tensor] of own) {
      const stored = tensors.get(name);
      if (!stored) {
        if (strict) problems.push(`missing "${name}" ${formatShape(tensor.shape)}`);
      } else if (
        sizeOf(stored.shape) !== tensor.size ||
        stored.shape.length !== tensor.shape.length ||
        stored.shape.some((dim, index) => dim !== tensor.shape[index])
      ) {
        problems.push(
          `"${name}" has shape ${formatShape(stored.shape)}, the model needs ${formatShape(tensor.shape)}`,
        );
      }
    }
    if (strict) {
      for (const name of tensors.keys()) if (!own.has(name)) problems.push(`unexpected "${name}"`);
    }
    if (problems.length > 0) {
      const shown = problems.slice(0, 20).join("\n  ");
      const more = problems.length > 20 ? `\n  ... and ${problems.length - 20} more` : "";
      throw new ModuleError(`${source} does not fit this ${this.constructor.name}:\n  ${shown}${more}`);
    }
    for (const [name, tensor] of own) {
      const stored = tensors.get(name);
      // In place (same buffer, so optimiser state stays attached), recorded in the current batch
      // from a staging buffer: lands after the work recorded before it, and submits nothing.
      if (stored) tensor.write(stored.data);
    }
  }

  /** Downloads every parameter and buffer (one GPU sync for all). */
  async state(): Promise<Map<string, { shape: readonly number[]; data: Float32Array }>> {
    const entries = [...this.stateTensors()];
    const values = await Promise.all(entries.map(([, tensor]) => tensor.download()));
    return new Map(
      entries.map(([name, tensor], index) => [name, { shape: tensor.shape, data: values[index] }]),
    );
  }

  /** Saves parameters and buffers to a safetensors file (atomically). */
  async save(path: string, metadata: Record<string, string> = {}): Promise<void> {
    const state = await this.state();
    const tensors = new Map<string, TensorToWrite>();
    for (const [name, entry] of state) tensors.set(name, { shape: entry.shape, data: entry.data });
    writeSafetensors(path, tensors, { format: "pt", ...metadata });
  }

  /** Loads a safetensors file written by `save` or by PyTorch/diffusers with the same names. */
  load(path: string, strict = true): Record<string, string> {
    const file = readSafetensors(path);
    this.loadState(file.tensors, strict, path);
    return file.metadata;
  }

  /** Frees every parameter and buffer. */
  dispose(): void {
    for (const tensor of this.stateTensors().values()) {
      tensor.retained = false;
      tensor.release();
    }
  }
}

/** An ordered list of modules named "0", "1", ... (PyTorch's nn.ModuleList / Sequential names). */
export class ModuleList<M extends Module> extends Module {
  readonly items: M[] = [];
  constructor(gpu: Gpu, modules: M[] = []) {
    super(gpu);
    for (const module of modules) this.push(module);
  }
  push(module: M): M {
    this.child(String(this.items.length), module);
    this.items.push(module);
    return module;
  }
}
