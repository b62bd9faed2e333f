/**
 * Training-loop kernels: AdamW (PyTorch's algorithm, decoupled weight decay, bias correction), global
 * gradient-norm clipping, an exponential moving average of parameters, and the cosine learning-rate
 * schedule with linear warm-up. Defaults are RoentGen-v2's (lr 1e-5, betas 0.9/0.999, weight decay
 * 1e-2, eps 1e-8, 500 warm-up steps, clip at 1.0).
 *
 * Layout (ops/softmax/ is the worked example): `choose.ts` (vec4 or scalar), `elementwise.ts` (the
 * AdamW, clip-scale and EMA kernels, each one template built for both variants), `norm.ts` (the
 * gradient-norm reduction), `config.ts`, `schedule.ts` (cosine learning rate), `reference.ts`,
 * `cost.ts`. No bench.ts here (the EMA figure below came from a one-off measurement).
 *
 * Nothing here reads back to the CPU: step counts and learning rates live on the CPU and reach the
 * kernels as uniforms, and the clipping factor is read by a kernel from the GPU-computed norm.
 */
import type { Gpu } from "../../runtime/device.ts";
import { grid, launch } from "../../runtime/kernel.ts";
import { OpError, Tensor } from "../../runtime/tensor.ts";
import { Params } from "../../runtime/uniforms.ts";
import { type ElementwiseOptions, elementwiseCount, resolveVariant } from "./choose.ts";
import { ADAMW_DEFAULTS, type AdamWConfig, EMA_DEFAULTS, type EmaConfig } from "./config.ts";
import { adamwCost } from "./cost.ts";
import { ELEMENTWISE } from "./elementwise.ts";
import { NORM_SUM } from "./norm.ts";

export { chooseElementwiseVariant, type ElementwiseOptions, type ElementwiseVariant } from "./choose.ts";
export { ADAMW_DEFAULTS, type AdamWConfig, EMA_DEFAULTS, type EmaConfig } from "./config.ts";
export { adamwCost } from "./cost.ts";
export { adamwReference, clipGradNormReference, emaReference } from "./reference.ts";
export { COSINE_SCHEDULE_DEFAULTS, type CosineScheduleConfig, cosineLearningRate } from "./schedule.ts";

/** The kernels by variant and pass, exactly as launched (`cxr kernels dump optim`). */
export const OPTIM_KERNELS = {
  scalar: { ...ELEMENTWISE.scalar, normSum: NORM_SUM },
  vec4: { ...ELEMENTWISE.vec4, normSum: NORM_SUM },
} as const;

// ---------------------------------------------------------------------------------------------
// AdamW

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
        { name: "adamw", variant, code: ELEMENTWISE[variant].adamw },
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
    for (const [target, source] of pairs) target.copyFrom(source);
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
    { name: "clipGradNorm", variant: square ? "sum-of-squares" : "sum", code: NORM_SUM },
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
      { name: "clipGradNorm", variant: `scale-${variant}`, code: ELEMENTWISE[variant].clipScale },
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

/** The decay of the n-th update (n counts from 1). */
export function emaDecay(update: number, config: Pick<EmaConfig, "decay" | "schedule">): number {
  if (config.schedule === "constant") return config.decay;
  const k = update - 1;
  if (k <= 0) return 0;
  return Math.min(config.decay, (1 + k) / (10 + k));
}

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
    this.averages = params.map((param) => Tensor.empty(param.gpu, param.shape).copyFrom(param));
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
        { name: "emaUpdate", variant, code: ELEMENTWISE[variant].emaUpdate },
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
      param.copyFrom(this.averages[index]);
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
      held.copyFrom(param);
      param.copyFrom(this.averages[index]);
      this.averages[index].copyFrom(held);
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
      this.averages[index].copyFrom(source);
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
