/**
 * Training-loop kernels: AdamW (PyTorch's algorithm, decoupled weight decay, bias correction), global
 * gradient-norm clipping, an exponential moving average of parameters, and the cosine learning-rate
 * schedule with linear warm-up. Defaults are RoentGen-v2's (lr 1e-5, betas 0.9/0.999, weight decay
 * 1e-2, eps 1e-8, 500 warm-up steps, clip at 1.0).
 *
 * Nothing here reads back to the CPU: step counts and learning rates live on the CPU and reach the
 * kernels as uniforms, and the clipping factor is read by a kernel from the GPU-computed norm.
 */
import type { Gpu } from "../runtime/device.ts";
import { grid, LINEAR_INDEX_WGSL, launch, wgsl } from "../runtime/kernel.ts";
import { OpError, Tensor } from "../runtime/tensor.ts";
import { Params } from "../runtime/uniforms.ts";

// ---------------------------------------------------------------------------------------------
// Elementwise variants

/**
 * "vec4": each invocation updates 4 elements through vec4 loads. On the CPU adapter this halves the
 * time (llvmpipe makes each per-invocation load a scalar load with a bounds check, so fewer, wider
 * loads win: 4M-element EMA update 64 ms vs 142 ms, measured on lavapipe); on GPUs 16-byte loads
 * coalesce as well. The up to 3 lanes past the end fall in the buffer's padding (pooled buffers are
 * multiples of 16 bytes) and are never read as data. "scalar" is one element per invocation: the
 * naive reference, and the fallback for tensors over buffers that are not multiples of 16 bytes.
 */
export type ElementwiseVariant = "vec4" | "scalar";

export interface ElementwiseOptions {
  /** Force a variant (tests, benchmarks); default `chooseElementwiseVariant`. */
  variant?: ElementwiseVariant;
}

export function chooseElementwiseVariant(tensors: readonly Tensor[]): ElementwiseVariant {
  return tensors.every((tensor) => tensor.buffer.size % 16 === 0) ? "vec4" : "scalar";
}

function resolveVariant(
  op: string,
  tensors: readonly Tensor[],
  forced?: ElementwiseVariant,
): ElementwiseVariant {
  if (forced === "vec4" && chooseElementwiseVariant(tensors) !== "vec4") {
    throw new OpError(op, "the vec4 variant needs buffers whose sizes are multiples of 16 bytes");
  }
  if (forced !== undefined && forced !== "vec4" && forced !== "scalar") {
    throw new OpError(op, `unknown variant "${forced as string}" (vec4, scalar)`);
  }
  return forced ?? chooseElementwiseVariant(tensors);
}

/** The WGSL of an elementwise template (`{{type}}` is f32 or vec4<f32>) for each variant. */
function elementwiseSources(template: string): Record<ElementwiseVariant, string> {
  return { scalar: wgsl(template, { type: "f32" }), vec4: wgsl(template, { type: "vec4<f32>" }) };
}

/** Invocations (and the `size` uniform) for `size` elements: one per element or per 4. */
function elementwiseCount(variant: ElementwiseVariant, size: number): number {
  return variant === "vec4" ? Math.ceil(size / 4) : size;
}

// ---------------------------------------------------------------------------------------------
// AdamW

export interface AdamWConfig {
  learningRate: number;
  beta1: number;
  beta2: number;
  weightDecay: number;
  epsilon: number;
  /** Names for the state keys (e.g. module paths); default "0", "1", ... in parameter order. */
  parameterNames?: readonly string[];
}

export const ADAMW_DEFAULTS: Readonly<AdamWConfig> = {
  learningRate: 1e-5,
  beta1: 0.9,
  beta2: 0.999,
  weightDecay: 1e-2,
  epsilon: 1e-8,
};

/** One fused update per element: decay, both moments, bias-corrected step (PyTorch `_single_tensor_adamw`). */
export const ADAMW_TEMPLATE = `
@group(0) @binding(0) var<storage, read_write> parameter: array<{{type}}>;
@group(0) @binding(1) var<storage, read> gradient: array<{{type}}>;
@group(0) @binding(2) var<storage, read_write> firstMoment: array<{{type}}>;
@group(0) @binding(3) var<storage, read_write> secondMoment: array<{{type}}>;
struct Params {
  size: u32, decayFactor: f32, beta1: f32, oneMinusBeta1: f32,
  beta2: f32, oneMinusBeta2: f32, stepSize: f32, sqrtBiasCorrection2: f32, epsilon: f32,
}
@group(0) @binding(4) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  let g = gradient[index];
  let m = params.beta1 * firstMoment[index] + params.oneMinusBeta1 * g;
  let v = params.beta2 * secondMoment[index] + params.oneMinusBeta2 * g * g;
  firstMoment[index] = m;
  secondMoment[index] = v;
  let denominator = sqrt(v) / params.sqrtBiasCorrection2 + params.epsilon;
  parameter[index] = parameter[index] * params.decayFactor - params.stepSize * m / denominator;
}`;
export const ADAMW_WGSL = elementwiseSources(ADAMW_TEMPLATE);

export function adamwCost(size: number) {
  return { flops: 14 * size, bytes: 28 * size };
}

/** Float64 reference of one PyTorch AdamW step on one parameter, updating param, m and v in place. */
export const adamwReference = {
  step(
    parameter: Float64Array,
    gradient: Float64Array,
    firstMoment: Float64Array,
    secondMoment: Float64Array,
    step: number,
    config: Omit<AdamWConfig, "parameterNames">,
  ): void {
    const { learningRate, beta1, beta2, weightDecay, epsilon } = config;
    const biasCorrection1 = 1 - beta1 ** step;
    const biasCorrection2 = 1 - beta2 ** step;
    const stepSize = learningRate / biasCorrection1;
    for (let index = 0; index < parameter.length; index++) {
      parameter[index] *= 1 - learningRate * weightDecay;
      const g = gradient[index];
      firstMoment[index] += (g - firstMoment[index]) * (1 - beta1); // torch: exp_avg.lerp_(grad, 1 - beta1)
      secondMoment[index] = secondMoment[index] * beta2 + (1 - beta2) * g * g;
      const denominator = Math.sqrt(secondMoment[index]) / Math.sqrt(biasCorrection2) + epsilon;
      parameter[index] -= (stepSize * firstMoment[index]) / denominator;
    }
  },
};

function checkTrainable(op: string, params: readonly Tensor[]): void {
  if (params.length === 0) throw new OpError(op, "needs at least one parameter");
  const seen = new Set<Tensor>();
  params.forEach((param, index) => {
    if (param.dtype !== "f32") {
      throw new OpError(op, `parameter ${index} has dtype ${param.dtype}; only f32 is supported`, { param });
    }
    if (seen.has(param.owner)) throw new OpError(op, `parameter ${index} appears twice`, { param });
    seen.add(param.owner);
  });
}

function checkNames(op: string, params: readonly Tensor[], names: readonly string[] | undefined): string[] {
  const result = names ? [...names] : params.map((_, index) => String(index));
  if (result.length !== params.length) {
    throw new OpError(op, `${result.length} parameter names for ${params.length} parameters`);
  }
  if (new Set(result).size !== result.length) throw new OpError(op, "parameter names repeat");
  return result;
}

function checkGradient(op: string, param: Tensor, index: number): Tensor | null {
  const gradient = param.grad;
  if (gradient && (gradient.size !== param.size || gradient.dtype !== "f32")) {
    throw new OpError(op, `gradient of parameter ${index} does not match it`, { param, gradient });
  }
  return gradient;
}

function copyInto(target: Tensor, source: Tensor): void {
  target.gpu.commandEncoder().copyBufferToBuffer(source.buffer, 0, target.buffer, 0, target.byteLength);
}

function zerosLike(tensor: Tensor): Tensor {
  return Tensor.zeros(tensor.gpu, tensor.shape);
}

/** Checks that a loaded state tensor matches the one it replaces. */
function stateTensor(op: string, state: Record<string, Tensor>, key: string, like: Tensor): Tensor {
  const tensor = state[key];
  if (!tensor) throw new OpError(op, `state has no entry "${key}"`);
  if (tensor.size !== like.size || tensor.dtype !== like.dtype) {
    throw new OpError(op, `state entry "${key}" does not match its parameter`, {
      [key]: tensor,
      expected: like,
    });
  }
  return tensor;
}

/**
 * AdamW over a fixed list of parameters. `step()` applies one update to every parameter that has a
 * gradient (one fused kernel each); `zeroGrad()` drops the gradients (PyTorch's set_to_none).
 */
export class AdamW {
  readonly config: Readonly<Omit<AdamWConfig, "parameterNames">>;
  readonly names: readonly string[];
  private readonly firstMoments: Tensor[];
  private readonly secondMoments: Tensor[];
  /** Per-parameter step counts (PyTorch counts per parameter: one without a gradient is not stepped). */
  private readonly steps: number[];
  private stepTensor: Tensor | null = null;

  constructor(
    readonly params: readonly Tensor[],
    config: Partial<AdamWConfig> = {},
    private readonly options: ElementwiseOptions = {},
  ) {
    checkTrainable("AdamW", params);
    const { parameterNames, ...hyper } = { ...ADAMW_DEFAULTS, ...config };
    const { learningRate, beta1, beta2, weightDecay, epsilon } = hyper;
    const invalid = [
      !(learningRate >= 0) && `learningRate ${learningRate} must be >= 0`,
      !(beta1 >= 0 && beta1 < 1) && `beta1 ${beta1} must be in [0, 1)`,
      !(beta2 >= 0 && beta2 < 1) && `beta2 ${beta2} must be in [0, 1)`,
      !(weightDecay >= 0) && `weightDecay ${weightDecay} must be >= 0`,
      !(epsilon >= 0) && `epsilon ${epsilon} must be >= 0`,
    ].filter(Boolean);
    if (invalid.length > 0) throw new OpError("AdamW", invalid.join("; "));
    this.config = hyper;
    this.names = checkNames("AdamW", params, parameterNames);
    this.firstMoments = params.map(zerosLike);
    this.secondMoments = params.map(zerosLike);
    this.steps = params.map(() => 0);
  }

  /** The step count of parameter `index` (0 before its first update). */
  stepCount(index = 0): number {
    return this.steps[index];
  }

  /** One update with the configured learning rate, or `learningRate` (e.g. from `cosineLearningRate`). */
  step(learningRate = this.config.learningRate): void {
    if (!(learningRate >= 0)) throw new OpError("AdamW", `learning rate ${learningRate} must be >= 0`);
    const { beta1, beta2, weightDecay, epsilon } = this.config;
    this.params.forEach((param, index) => {
      const gradient = checkGradient("AdamW", param, index);
      if (!gradient) return;
      const step = ++this.steps[index];
      // Bias corrections in float64 on the CPU; the kernel only sees the finished factors.
      const biasCorrection1 = 1 - beta1 ** step;
      const biasCorrection2 = 1 - beta2 ** step;
      const bindings = [param, gradient, this.firstMoments[index], this.secondMoments[index]];
      const variant = resolveVariant("AdamW", bindings, this.options.variant);
      const count = elementwiseCount(variant, param.size);
      launch(
        param.gpu,
        { name: "adamw", variant, code: ADAMW_WGSL[variant] },
        {
          bindings,
          params: new Params()
            .u32(count)
            .f32(
              1 - learningRate * weightDecay,
              beta1,
              1 - beta1,
              beta2,
              1 - beta2,
              learningRate / biasCorrection1,
              Math.sqrt(biasCorrection2),
              epsilon,
            ),
          workgroups: grid(count, 256),
          ...adamwCost(param.size),
        },
      );
    });
  }

  zeroGrad(): void {
    for (const param of this.params) {
      param.grad?.release();
      param.grad = null;
    }
  }

  /**
   * The optimizer state for a checkpoint, with PyTorch's names: `<name>.exp_avg`, `<name>.exp_avg_sq`
   * and `step` (per-parameter step counts as f32, exact below 2^24). These are the optimizer's own
   * live tensors: download them, do not release them.
   */
  state(): Record<string, Tensor> {
    const gpu = this.params[0].gpu;
    const counts = Float32Array.from(this.steps);
    if (!this.stepTensor) this.stepTensor = Tensor.empty(gpu, [this.steps.length]);
    // Recorded in the current batch (lands after the updates recorded before it), no submit.
    this.stepTensor.write(counts);
    const state: Record<string, Tensor> = { step: this.stepTensor };
    this.names.forEach((name, index) => {
      state[`${name}.exp_avg`] = this.firstMoments[index];
      state[`${name}.exp_avg_sq`] = this.secondMoments[index];
    });
    return state;
  }

  /** Restores a state saved by `state()` (copies the moments; reads the step counts back once). */
  async loadState(state: Record<string, Tensor>): Promise<void> {
    const steps = state.step;
    if (!steps || steps.size !== this.params.length) {
      throw new OpError("AdamW.loadState", `needs "step" with ${this.params.length} counts`, {
        ...(steps ? { step: steps } : {}),
      });
    }
    const pairs = this.names.flatMap((name, index) => [
      [
        this.firstMoments[index],
        stateTensor("AdamW.loadState", state, `${name}.exp_avg`, this.params[index]),
      ],
      [
        this.secondMoments[index],
        stateTensor("AdamW.loadState", state, `${name}.exp_avg_sq`, this.params[index]),
      ],
    ]);
    const counts = await steps.download();
    counts.forEach((count, index) => {
      if (!Number.isInteger(count) || count < 0) {
        throw new OpError("AdamW.loadState", `step count ${count} of parameter ${index} is not a count`);
      }
    });
    for (const [target, source] of pairs) copyInto(target, source);
    counts.forEach((count, index) => {
      this.steps[index] = count;
    });
  }

  /** Frees the moments (the parameters stay). */
  release(): void {
    for (const tensor of [...this.firstMoments, ...this.secondMoments]) tensor.release();
    this.stepTensor?.release();
  }
}

// ---------------------------------------------------------------------------------------------
// Global gradient-norm clipping

/** Each partial is the sum of every `partialCount`-th value (coalesced on GPUs; plain loads on CPUs). */
const PARTIAL_SUMS_PER_INVOCATION = 256;

/**
 * Sum (of squares, at the first level) of strided elements into one partial per invocation; levels
 * repeat until one value is left, which the last level turns into its square root.
 */
export const SUM_OF_SQUARES_WGSL = `
@group(0) @binding(0) var<storage, read> values: array<f32>;
@group(0) @binding(1) var<storage, read_write> partials: array<f32>;
struct Params { size: u32, partialCount: u32, partialOffset: u32, square: u32, takeRoot: u32 }
@group(0) @binding(2) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.partialCount) { return; }
  var total = 0.0;
  for (var element = index; element < params.size; element += params.partialCount) {
    let value = values[element];
    total += select(value, value * value, params.square == 1u);
  }
  partials[params.partialOffset + index] = select(total, sqrt(total), params.takeRoot == 1u);
}`;

/** gradient *= min(1, maxNorm / (norm + 1e-6)), with the norm read from the GPU (torch.nn.utils.clip_grad_norm_). */
export const CLIP_SCALE_TEMPLATE = `
@group(0) @binding(0) var<storage, read_write> gradient: array<{{type}}>;
@group(0) @binding(1) var<storage, read> norm: array<f32>;
struct Params { size: u32, maxNorm: f32 }
@group(0) @binding(2) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  let factor = min(1.0, params.maxNorm / (norm[0] + 1e-6));
  gradient[index] = gradient[index] * factor;
}`;
export const CLIP_SCALE_WGSL = elementwiseSources(CLIP_SCALE_TEMPLATE);

/** Float64 reference of torch.nn.utils.clip_grad_norm_ (L2): scales the gradients in place, returns the norm. */
export const clipGradNormReference = {
  clip(gradients: Float64Array[], maxNorm: number): number {
    let total = 0;
    for (const gradient of gradients) for (const value of gradient) total += value * value;
    const norm = Math.sqrt(total);
    const factor = Math.min(1, maxNorm / (norm + 1e-6));
    for (const gradient of gradients)
      for (let index = 0; index < gradient.length; index++) gradient[index] *= factor;
    return norm;
  },
};

function sumLevel(
  gpu: Gpu,
  values: Tensor,
  partials: Tensor,
  size: number,
  count: number,
  offset: number,
  square: boolean,
  takeRoot: boolean,
): void {
  launch(
    gpu,
    { name: "clipGradNorm", variant: square ? "sum-of-squares" : "sum", code: SUM_OF_SQUARES_WGSL },
    {
      bindings: [values, partials],
      params: new Params().u32(size, count, offset, square ? 1 : 0, takeRoot ? 1 : 0),
      workgroups: grid(count, 256),
      flops: (square ? 2 : 1) * size,
      bytes: 4 * (size + count),
    },
  );
}

/**
 * Scales all gradients by min(1, maxNorm / (norm + 1e-6)), norm being the L2 norm of all of them
 * together, exactly as torch.nn.utils.clip_grad_norm_. Returns the norm before clipping as a
 * 1-element tensor (download it to log it; nothing here waits for the GPU). Parameters without a
 * gradient are skipped.
 */
export function clipGradNorm(
  params: readonly Tensor[],
  maxNorm = 1,
  options: ElementwiseOptions = {},
): Tensor {
  checkTrainable("clipGradNorm", params);
  if (!(maxNorm > 0) || !Number.isFinite(maxNorm)) {
    throw new OpError("clipGradNorm", `maxNorm must be a positive number, got ${maxNorm}`);
  }
  const gpu = params[0].gpu;
  const gradients = params
    .map((param, index) => checkGradient("clipGradNorm", param, index))
    .filter((gradient): gradient is Tensor => gradient !== null);
  if (gradients.length === 0) return Tensor.zeros(gpu, [1]);
  const counts = gradients.map((gradient) => Math.ceil(gradient.size / PARTIAL_SUMS_PER_INVOCATION));
  let size = counts.reduce((a, b) => a + b, 0);
  let partials = Tensor.empty(gpu, [size]);
  let offset = 0;
  gradients.forEach((gradient, index) => {
    sumLevel(gpu, gradient, partials, gradient.size, counts[index], offset, true, size === 1);
    offset += counts[index];
  });
  while (size > 1) {
    const count = Math.ceil(size / PARTIAL_SUMS_PER_INVOCATION);
    const next = Tensor.empty(gpu, [count]);
    sumLevel(gpu, partials, next, size, count, 0, false, count === 1);
    partials.release();
    partials = next;
    size = count;
  }
  for (const gradient of gradients) {
    const variant = resolveVariant("clipGradNorm", [gradient], options.variant);
    const count = elementwiseCount(variant, gradient.size);
    launch(
      gpu,
      { name: "clipGradNorm", variant: `scale-${variant}`, code: CLIP_SCALE_WGSL[variant] },
      {
        bindings: [gradient, partials],
        params: new Params().u32(count).f32(maxNorm),
        workgroups: grid(count, 256),
        flops: gradient.size,
        bytes: 8 * gradient.size,
      },
    );
  }
  return partials;
}

// ---------------------------------------------------------------------------------------------
// Exponential moving average of parameters

export interface EmaConfig {
  /** The decay the average approaches (diffusers' EMAModel default). */
  decay: number;
  /**
   * "diffusers": decay_n = min(decay, (1 + k) / (10 + k)) with k = n - 1 at the n-th update, so
   * the first update copies the parameters and early averages are not dominated by the
   * initialisation (diffusers' EMAModel, which RoentGen-v2's training script uses).
   * "constant": decay_n = decay.
   */
  schedule: "diffusers" | "constant";
  parameterNames?: readonly string[];
}

export const EMA_DEFAULTS: Readonly<EmaConfig> = { decay: 0.9999, schedule: "diffusers" };

/** average += (1 - decay) * (param - average), diffusers' form. */
export const EMA_UPDATE_TEMPLATE = `
@group(0) @binding(0) var<storage, read_write> average: array<{{type}}>;
@group(0) @binding(1) var<storage, read> parameter: array<{{type}}>;
struct Params { size: u32, oneMinusDecay: f32 }
@group(0) @binding(2) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  let current = average[index];
  average[index] = current - params.oneMinusDecay * (current - parameter[index]);
}`;
export const EMA_UPDATE_WGSL = elementwiseSources(EMA_UPDATE_TEMPLATE);

/** The decay of the n-th update (n counts from 1). */
export function emaDecay(update: number, config: Pick<EmaConfig, "decay" | "schedule">): number {
  if (config.schedule === "constant") return config.decay;
  const k = update - 1;
  if (k <= 0) return 0;
  return Math.min(config.decay, (1 + k) / (10 + k));
}

export const emaReference = {
  update(average: Float64Array, parameter: Float64Array, decay: number): void {
    for (let index = 0; index < average.length; index++) {
      average[index] -= (1 - decay) * (average[index] - parameter[index]);
    }
  },
};

/** An exponential moving average of parameters, kept on the GPU. */
export class Ema {
  readonly config: Readonly<Omit<EmaConfig, "parameterNames">>;
  readonly names: readonly string[];
  readonly averages: Tensor[];
  private updates_ = 0;

  constructor(
    readonly params: readonly Tensor[],
    decay: number | Partial<EmaConfig> = {},
    private readonly options: ElementwiseOptions = {},
  ) {
    checkTrainable("Ema", params);
    const { parameterNames, ...config } = {
      ...EMA_DEFAULTS,
      ...(typeof decay === "number" ? { decay } : decay),
    };
    if (!(config.decay >= 0 && config.decay <= 1)) {
      throw new OpError("Ema", `decay ${config.decay} must be in [0, 1]`);
    }
    if (config.schedule !== "diffusers" && config.schedule !== "constant") {
      throw new OpError("Ema", `unknown decay schedule "${config.schedule}"`);
    }
    this.config = config;
    this.names = checkNames("Ema", params, parameterNames);
    this.averages = params.map((param) => {
      const average = Tensor.empty(param.gpu, param.shape);
      copyInto(average, param);
      return average;
    });
  }

  /** How many times `update()` has run. */
  get updates(): number {
    return this.updates_;
  }

  /** Folds the current parameters into the average (call after each optimizer step). */
  update(): void {
    this.updates_++;
    const decay = emaDecay(this.updates_, this.config);
    this.params.forEach((param, index) => {
      const bindings = [this.averages[index], param];
      const variant = resolveVariant("Ema", bindings, this.options.variant);
      const count = elementwiseCount(variant, param.size);
      launch(
        param.gpu,
        { name: "emaUpdate", variant, code: EMA_UPDATE_WGSL[variant] },
        {
          bindings,
          params: new Params().u32(count).f32(1 - decay),
          workgroups: grid(count, 256),
          flops: 3 * param.size,
          bytes: 12 * param.size,
        },
      );
    });
  }

  /** Writes the averages into `params` (default: the tracked parameters), e.g. before saving. */
  copyTo(params: readonly Tensor[] = this.params): void {
    this.checkTargets(params);
    params.forEach((param, index) => {
      copyInto(param, this.averages[index]);
    });
  }

  /**
   * Exchanges the averages and the parameters: call once to evaluate with the averaged weights and
   * once more to return to training.
   */
  swap(params: readonly Tensor[] = this.params): void {
    this.checkTargets(params);
    params.forEach((param, index) => {
      const held = Tensor.empty(param.gpu, param.shape);
      copyInto(held, param);
      copyInto(param, this.averages[index]);
      copyInto(this.averages[index], held);
      held.release();
    });
  }

  /** `<name>` -> the averaged tensor (live, do not release) for checkpoints. */
  state(): Record<string, Tensor> {
    return Object.fromEntries(this.names.map((name, index) => [name, this.averages[index]]));
  }

  /** Restores averages saved by `state()` and the update count (which drives the decay schedule). */
  loadState(state: Record<string, Tensor>, updates: number): void {
    if (!Number.isInteger(updates) || updates < 0) {
      throw new OpError("Ema.loadState", `update count ${updates} must be an integer >= 0`);
    }
    const sources = this.names.map((name, index) =>
      stateTensor("Ema.loadState", state, name, this.params[index]),
    );
    sources.forEach((source, index) => {
      copyInto(this.averages[index], source);
    });
    this.updates_ = updates;
  }

  release(): void {
    for (const average of this.averages) average.release();
  }

  private checkTargets(params: readonly Tensor[]): void {
    if (params.length !== this.averages.length) {
      throw new OpError("Ema", `${params.length} parameters given, ${this.averages.length} averaged`);
    }
    params.forEach((param, index) => {
      if (param.size !== this.averages[index].size || param.dtype !== "f32") {
        throw new OpError("Ema", `parameter ${index} does not match its average`, {
          param,
          average: this.averages[index],
        });
      }
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Learning-rate schedule

export interface CosineScheduleConfig {
  baseLearningRate: number;
  warmupSteps: number;
  totalSteps: number;
  /** Half-waves of the cosine over the decay phase; 0.5 decays once from base to zero. */
  cycles: number;
}

export const COSINE_SCHEDULE_DEFAULTS: Readonly<Omit<CosineScheduleConfig, "totalSteps">> = {
  baseLearningRate: 1e-5,
  warmupSteps: 500,
  cycles: 0.5,
};

/**
 * The learning rate at optimizer step `step` (0-based), as diffusers'
 * get_cosine_schedule_with_warmup: linear from 0 over the warm-up, then
 * base * max(0, (1 + cos(2 pi cycles progress)) / 2). Like PyTorch's LambdaLR, step 0 has rate 0.
 */
export function cosineLearningRate(
  step: number,
  config: Partial<CosineScheduleConfig> & Pick<CosineScheduleConfig, "totalSteps">,
): number {
  const { baseLearningRate, warmupSteps, totalSteps, cycles } = { ...COSINE_SCHEDULE_DEFAULTS, ...config };
  if (!Number.isInteger(step) || step < 0)
    throw new RangeError(`cosineLearningRate: step ${step} must be an integer >= 0`);
  if (!Number.isInteger(totalSteps) || totalSteps < 1 || !Number.isInteger(warmupSteps) || warmupSteps < 0) {
    throw new RangeError(
      `cosineLearningRate: totalSteps (${totalSteps}) must be an integer >= 1 and warmupSteps (${warmupSteps}) an integer >= 0`,
    );
  }
  if (step < warmupSteps) return (baseLearningRate * step) / Math.max(1, warmupSteps);
  const progress = (step - warmupSteps) / Math.max(1, totalSteps - warmupSteps);
  return baseLearningRate * Math.max(0, 0.5 * (1 + Math.cos(Math.PI * cycles * 2 * progress)));
}
