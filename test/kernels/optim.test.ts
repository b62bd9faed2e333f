import {
  ADAMW_DEFAULTS,
  AdamW,
  adamwReference,
  chooseElementwiseVariant,
  clipGradNorm,
  clipGradNormReference,
  cosineLearningRate,
  type ElementwiseVariant,
  Ema,
  emaDecay,
  emaReference,
  type Tensor,
} from "@cxr/kernels";
import { describe, expect, it } from "vitest";
import { OPTIM_KERNELS } from "../../packages/kernels/src/ops/optim/index.ts";
import { dumpKernelSources } from "../../packages/kernels/src/ops/sources.ts";
import { compiledWhile } from "./compiled.ts";
import { asFloat32, expectClose, gpu, randomValues, upload } from "./helpers.ts";

const shapes = [[1], [7, 3], [1025], [70001]];
const variants: ElementwiseVariant[] = ["vec4", "scalar"];
const sizeOfShape = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

async function setGradient(param: Tensor, values: Float64Array): Promise<void> {
  param.grad?.release();
  param.grad = await upload(values, param.shape);
}

/** Writes new values into a tensor's own buffer, after the work already recorded on it. */
function overwrite(tensor: Tensor, values: ArrayLike<number>): void {
  tensor.gpu.flush();
  tensor.gpu.device.queue.writeBuffer(tensor.buffer, 0, Float32Array.from(values));
}

async function downloadAll(tensors: readonly Tensor[]): Promise<Float64Array[]> {
  return Promise.all(tensors.map(async (tensor) => Float64Array.from(await tensor.download())));
}

describe("AdamW", () => {
  // A large rate and decay so that f32 rounding of the parameters does not hide errors in the update.
  const config = { learningRate: 0.02, beta1: 0.8, beta2: 0.95, weightDecay: 0.1, epsilon: 1e-6 };

  it.each(variants)(
    "five steps match PyTorch's algorithm in float64, a parameter skipping one (%s)",
    async (variant) => {
      const initial = shapes.map((shape, index) => asFloat32(randomValues(sizeOfShape(shape), 10 + index)));
      const params = await Promise.all(shapes.map((shape, index) => upload(initial[index], shape, true)));
      const optimizer = new AdamW(params, { ...config, parameterNames: ["a", "b", "c", "d"] }, { variant });
      const reference = initial.map((values) => ({
        param: Float64Array.from(values),
        m: new Float64Array(values.length),
        v: new Float64Array(values.length),
        step: 0,
      }));
      for (let step = 0; step < 5; step++) {
        const learningRate = config.learningRate * (1 - step / 10); // the rate reaches the kernel as a uniform
        for (let index = 0; index < params.length; index++) {
          // Parameter "b" has no gradient at step 2: PyTorch neither decays nor counts it then.
          if (index === 1 && step === 2) {
            params[index].grad?.release();
            params[index].grad = null;
            continue;
          }
          const gradient = asFloat32(randomValues(initial[index].length, 100 * step + index, 0.5 + index));
          await setGradient(params[index], gradient);
          const state = reference[index];
          state.step++;
          adamwReference.step(state.param, gradient, state.m, state.v, state.step, {
            ...config,
            learningRate,
          });
        }
        optimizer.step(learningRate);
      }
      expect(optimizer.stepCount(0)).toBe(5);
      expect(optimizer.stepCount(1)).toBe(4);
      const actual = await downloadAll(params);
      const state = optimizer.state();
      for (let index = 0; index < params.length; index++) {
        const name = optimizer.names[index];
        const tolerance = { atol: 2e-6, rtol: 1e-5 };
        expectClose(actual[index], reference[index].param, tolerance, `param ${name}`);
        expectClose(
          await state[`${name}.exp_avg`].download(),
          reference[index].m,
          tolerance,
          `exp_avg ${name}`,
        );
        expectClose(
          await state[`${name}.exp_avg_sq`].download(),
          reference[index].v,
          tolerance,
          `exp_avg_sq ${name}`,
        );
      }
      expect(Array.from(await state.step.download())).toEqual([5, 4, 5, 5]);
    },
  );

  it("uses RoentGen-v2's defaults", () => {
    expect(ADAMW_DEFAULTS).toMatchObject({
      learningRate: 1e-5,
      beta1: 0.9,
      beta2: 0.999,
      weightDecay: 1e-2,
      epsilon: 1e-8,
    });
  });

  it("a restored state continues exactly like the original", async () => {
    const values = asFloat32(randomValues(300, 3));
    const gradients = [1, 2, 3].map((seed) => asFloat32(randomValues(300, 50 + seed)));
    const original = await upload(values, [300], true);
    const optimizer = new AdamW([original], config);
    for (const gradient of gradients.slice(0, 2)) {
      await setGradient(original, gradient);
      optimizer.step();
    }
    const copy = await upload(Float64Array.from(await original.download()), [300], true);
    const restored = new AdamW([copy], config);
    await restored.loadState(optimizer.state());
    expect(restored.stepCount()).toBe(2);
    await setGradient(original, gradients[2]);
    await setGradient(copy, gradients[2]);
    optimizer.step();
    restored.step();
    expect(Array.from(await copy.download())).toEqual(Array.from(await original.download()));
  });

  it("zeroGrad drops the gradients", async () => {
    const param = await upload([1, 2, 3], [3], true);
    await setGradient(param, Float64Array.from([1, 1, 1]));
    const optimizer = new AdamW([param]);
    optimizer.zeroGrad();
    expect(param.grad).toBeNull();
    optimizer.step(); // nothing to update
    expect(optimizer.stepCount()).toBe(0);
    expect(Array.from(await param.download())).toEqual([1, 2, 3]);
  });

  it("falls back to the scalar variant for buffers that are not multiples of 16 bytes", async () => {
    const device = await gpu();
    const { Tensor } = await import("@cxr/kernels");
    const { STORAGE_USAGE } = await import("../../packages/kernels/src/runtime/pool.ts");
    const odd = new Tensor(
      device,
      [3],
      "f32",
      device.device.createBuffer({ size: 12, usage: STORAGE_USAGE }),
    );
    odd.trainable();
    const pooled = await upload([1, 2, 3], [3], true);
    expect(chooseElementwiseVariant([pooled])).toBe("vec4");
    expect(chooseElementwiseVariant([odd])).toBe("scalar");
    odd.grad = await upload([1, -1, 1], [3]);
    expect(() => new AdamW([odd], {}, { variant: "vec4" }).step()).toThrow(
      "AdamW: the vec4 variant needs buffers whose sizes are multiples of 16 bytes",
    );
    new AdamW([odd], { learningRate: 0.1, weightDecay: 0 }).step();
    // The buffer starts zeroed; a first step moves each value by the rate against sign(g).
    expectClose(await odd.download(), [-0.1, 0.1, -0.1], { atol: 1e-6, rtol: 0 }, "scalar fallback");
  });

  it("rejects bad configuration and mismatched gradients", async () => {
    const param = await upload([1, 2, 3], [3], true);
    expect(() => new AdamW([param], { beta1: 1 })).toThrow("AdamW: beta1 1 must be in [0, 1)");
    expect(() => new AdamW([param, param])).toThrow(/AdamW: parameter 1 appears twice/);
    expect(() => new AdamW([param], { parameterNames: ["x", "y"] })).toThrow(
      /2 parameter names for 1 parameters/,
    );
    const optimizer = new AdamW([param]);
    param.grad = await upload([1, 2], [2]);
    expect(() => optimizer.step()).toThrow(
      "AdamW: gradient of parameter 0 does not match it (param: [3], gradient: [2])",
    );
    const device = await gpu();
    if (device.features.has("shader-f16")) {
      const half = await import("@cxr/kernels").then(({ Tensor }) =>
        Tensor.upload(device, [1, 2], [2], "f16"),
      );
      expect(() => new AdamW([half])).toThrow(
        "AdamW: parameter 0 has dtype f16; only f32 is supported (param: [2])",
      );
    }
  });
});

describe("clipGradNorm", () => {
  // Gradient sizes: one over many partial sums (70001 -> 274 partials: a second reduction level).
  const clipShapes = [[70001], [300], [1], [5, 7]];

  async function run(scaleOfGradients: number, maxNorm: number, variant: ElementwiseVariant) {
    const gradients = clipShapes.map((shape, index) =>
      asFloat32(randomValues(sizeOfShape(shape), 500 + index, scaleOfGradients)),
    );
    const params = await Promise.all(
      clipShapes.map((shape) => upload(new Float64Array(sizeOfShape(shape)), shape, true)),
    );
    for (let index = 0; index < params.length; index++) await setGradient(params[index], gradients[index]);
    const norm = clipGradNorm(params, maxNorm, { variant });
    const expectedNorm = clipGradNormReference.clip(gradients, maxNorm);
    // f32 partial sums of up to 256 squares, then a tree: 1e-5 relative.
    expectClose(await norm.download(), [expectedNorm], { atol: 0, rtol: 1e-5 }, "norm");
    const actual = await downloadAll(params.map((param) => param.grad!));
    for (let index = 0; index < params.length; index++) {
      expectClose(actual[index], gradients[index], { atol: 1e-7, rtol: 2e-5 }, `gradient ${index}`);
    }
    return { expectedNorm, actual, gradients };
  }

  it.each(variants)("leaves gradients alone when the norm is below the maximum (%s)", async (variant) => {
    const { expectedNorm } = await run(1e-3, 1, variant);
    expect(expectedNorm).toBeLessThan(1);
  });

  it.each(variants)("scales gradients to the maximum norm when above it (%s)", async (variant) => {
    const { expectedNorm, actual } = await run(1, 1, variant);
    expect(expectedNorm).toBeGreaterThan(100);
    let total = 0;
    for (const gradient of actual) for (const value of gradient) total += value * value;
    expect(Math.sqrt(total)).toBeCloseTo(1, 4);
  });

  it("one small gradient, and parameters without gradients", async () => {
    const a = await upload([0], [1], true);
    const b = await upload([0, 0], [2], true);
    await setGradient(b, Float64Array.from([3, 4]));
    const norm = clipGradNorm([a, b], 2);
    expectClose(await norm.download(), [5], { atol: 0, rtol: 1e-6 }, "norm");
    expectClose(await b.grad!.download(), [1.2, 1.6], { atol: 0, rtol: 1e-5 }, "clipped");
    b.grad = null;
    expect(Array.from(await clipGradNorm([a, b], 2).download())).toEqual([0]);
  });

  it("rejects a non-positive maximum", async () => {
    const a = await upload([0], [1], true);
    expect(() => clipGradNorm([a], 0)).toThrow("clipGradNorm: maxNorm must be a positive number, got 0");
  });
});

describe("Ema", () => {
  const cases = variants.flatMap((variant) =>
    (["constant", "diffusers"] as const).map((schedule) => [schedule, variant] as const),
  );
  it.each(cases)("%s decay: averages match the float64 reference (%s)", async (schedule, variant) => {
    const values = shapes
      .slice(0, 3)
      .map((shape, index) => asFloat32(randomValues(sizeOfShape(shape), 70 + index)));
    const params = await Promise.all(values.map((value, index) => upload(value, shapes[index], true)));
    const ema = new Ema(params, { decay: 0.9, schedule }, { variant });
    const averages = values.map((value) => Float64Array.from(value));
    for (let update = 1; update <= 4; update++) {
      // Move the parameters in place (as an optimizer step would), then fold them in.
      for (let index = 0; index < params.length; index++) {
        values[index] = asFloat32(randomValues(values[index].length, 1000 * update + index));
        overwrite(params[index], values[index]);
      }
      ema.update();
      const decay = emaDecay(update, { decay: 0.9, schedule });
      for (let index = 0; index < params.length; index++)
        emaReference.update(averages[index], values[index], decay);
    }
    expect(ema.updates).toBe(4);
    const actual = await downloadAll(ema.averages);
    for (let index = 0; index < params.length; index++) {
      expectClose(actual[index], averages[index], { atol: 1e-6, rtol: 1e-6 }, `average ${index}`);
    }
  });

  it("diffusers schedule: first update copies, then min(decay, (1 + k) / (10 + k))", () => {
    expect(emaDecay(1, { decay: 0.9999, schedule: "diffusers" })).toBe(0);
    expect(emaDecay(2, { decay: 0.9999, schedule: "diffusers" })).toBeCloseTo(2 / 11, 15);
    expect(emaDecay(100_000, { decay: 0.9999, schedule: "diffusers" })).toBe(0.9999);
    expect(emaDecay(1, { decay: 0.5, schedule: "constant" })).toBe(0.5);
  });

  it("update, copyTo and swap", async () => {
    const param = await upload([1, 2, 3], [3], true);
    const ema = new Ema([param], { decay: 0.75, schedule: "constant" });
    const moved = await upload([5, 6, 7], [3], true);
    ema.copyTo([moved]); // moved := average = [1, 2, 3]
    expect(Array.from(await moved.download())).toEqual([1, 2, 3]);
    overwrite(param, [9, 10, 11]);
    ema.update(); // average = 0.75 * [1, 2, 3] + 0.25 * [9, 10, 11]
    expect(Array.from(await ema.averages[0].download())).toEqual([3, 4, 5]);
    ema.swap();
    expect(Array.from(await param.download())).toEqual([3, 4, 5]);
    expect(Array.from(await ema.averages[0].download())).toEqual([9, 10, 11]);
    ema.swap();
    expect(Array.from(await param.download())).toEqual([9, 10, 11]);
    expect(() => ema.copyTo([moved, param])).toThrow("Ema: 2 parameters given, 1 averaged");
    expect(() => new Ema([param], 1.5)).toThrow("Ema: decay 1.5 must be in [0, 1]");
  });
});

describe("cosineLearningRate", () => {
  const config = { baseLearningRate: 1e-5, warmupSteps: 500, totalSteps: 2500 };
  it("warms up linearly from 0 and decays along a half cosine to 0", () => {
    expect(cosineLearningRate(0, config)).toBe(0);
    expect(cosineLearningRate(250, config)).toBeCloseTo(5e-6, 18);
    expect(cosineLearningRate(500, config)).toBeCloseTo(1e-5, 18);
    // Halfway through the decay: cos(pi / 2) = 0 -> half the base rate.
    expect(cosineLearningRate(1500, config)).toBeCloseTo(5e-6, 18);
    // A quarter: (1 + cos(pi / 4)) / 2 = 0.853553...
    expect(cosineLearningRate(1000, config)).toBeCloseTo(8.535533905932737e-6, 18);
    expect(cosineLearningRate(2500, config)).toBeCloseTo(0, 18);
    // Past totalSteps the formula rises again, as diffusers' does: (1 + cos(1.25 pi)) / 2 = 0.146447.
    expect(cosineLearningRate(3000, config)).toBeCloseTo(1e-5 * ((1 + Math.cos(1.25 * Math.PI)) / 2), 18);
  });
  it("defaults to 500 warm-up steps and rejects bad steps", () => {
    expect(cosineLearningRate(100, { totalSteps: 1000 })).toBeCloseTo(2e-6, 18);
    expect(() => cosineLearningRate(-1, config)).toThrow(/step -1/);
    expect(() => cosineLearningRate(1, { totalSteps: 0 })).toThrow(/totalSteps \(0\)/);
  });
});

describe("optimizer kernels (ops/optim/)", () => {
  it.each(variants)("%s: the WGSL that `cxr kernels dump optim` prints is what runs", async (variant) => {
    const compiled = await compiledWhile(async (device) => {
      const param = (await upload(randomValues(8, 1), [8], true)) as Tensor;
      param.grad = await upload(randomValues(8, 2), [8]);
      const ema = new Ema([param], {}, { variant });
      clipGradNorm([param], 1, { variant });
      new AdamW([param], {}, { variant }).step();
      ema.update();
      await param.download();
      expect(device).toBe(param.gpu);
    });
    const k = OPTIM_KERNELS[variant];
    expect(compiled.filter((code) => Object.values(k).includes(code))).toEqual([
      k.normSum,
      k.clipScale,
      k.adamw,
      k.emaUpdate,
    ]);
    expect(dumpKernelSources({ op: "optim", variant, pass: "adamw" })).toBe(
      `// optim / ${variant} / adamw${k.adamw}\n`,
    );
  });
});
