/**
 * Golden values for the sampler updates and timestep lists, worked from the published formulas
 * rather than from our code, so a transliteration error that the step-by-step comparisons in
 * schedule.test.ts would share with its reference still fails here.
 *
 * Setup shared by all three samplers (SD 2.1's schedule: scaled_linear, beta from 0.00085 to 0.012
 * over T = 1000, abar_t = prod_{s<=t} (1 - beta_s), abar_0 = 0.99915):
 *   x_T = [1, -0.5, 0.25], and the "model" answers call k (k = 0, 1, ...) with the NON-constant
 *   epsilon e_k = [0.3 + 0.1 k, -0.5 + 0.2 k^2, 1 - 0.25 k]
 *   (a constant epsilon makes every multistep combination collapse to it, so wrong weights would pass).
 *
 * The numbers were computed in float64 by this independent numpy script (run with /usr/bin/python3),
 * which uses only the papers' formulas:
 *
 *   betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000)**2; abar = np.cumprod(1 - betas)
 *   # DDIM, Song et al. 2021 eq. 12 with sigma_t = 0 (eta 0):
 *   #   x_prev = sqrt(abar_prev) * (x_t - sqrt(1 - abar_t) e) / sqrt(abar_t) + sqrt(1 - abar_prev) e
 *   #   4 steps, "leading" + steps_offset 1: t = 751, 501, 251, 1; prev = t - 250; after the last
 *   #   abar_prev = abar_0 (set_alpha_to_one False).
 *   # PNDM/PLMS, Liu et al. 2022 (pseudo linear multistep), with diffusers' skip_prk_steps warm-up:
 *   #   transfer phi(x_t, t, t', e) = sqrt(abar_t'/abar_t) x_t
 *   #        - (abar_t' - abar_t) e / (abar_t sqrt(1 - abar_t') + sqrt(abar_t (1 - abar_t) abar_t'))
 *   #   calls at t = 751, 501, 501, 251, 1:
 *   #   call 0: x = phi(x_T, 751, 501, e0)              (e0 stored; x_T kept)
 *   #   call 1: x = phi(x_T, 751, 501, (e1 + e0) / 2)   (second-order start; e1 NOT stored)
 *   #   call 2: x = phi(x, 501, 251, (3 e2 - e0) / 2)   (Adams-Bashforth 2 over the stored e0, e2)
 *   #   call 3: x = phi(x, 251, 1, (23 e3 - 16 e2 + 5 e0) / 12)
 *   #   call 4: x = phi(x, 1, -249 -> abar_0, (55 e4 - 59 e3 + 37 e2 - 9 e0) / 24)
 *   # DPM-Solver++(2M), Lu et al. 2022 Algorithm 2 (data prediction x0 = (x - sigma e) / alpha):
 *   #   sigma_i = sqrt((1 - abar)/abar) at t_i, then 0; alpha = 1/sqrt(1 + sigma^2), sigma_t = sigma alpha,
 *   #   lambda = log(alpha_t / sigma_t); h_i = lambda_{i+1} - lambda_i; r_i = h_{i-1} / h_i;
 *   #   D_i = x0_i at the first and the last step, else (1 + 1/(2 r_i)) x0_i - 1/(2 r_i) x0_{i-1};
 *   #   x_{i+1} = (sigma_{i+1}/sigma_i) x_i - alpha_{i+1} (e^{-h_i} - 1) D_i.
 *   #   4 steps, "linspace" spacing with n + 1 points: np.linspace(0, 999, 5) = [0, 249.75, 499.5,
 *   #   749.25, 999], rounded half-to-even [0, 250, 500, 749, 999], reversed without the 0:
 *   #   t = 999, 749, 500, 250; h = 1.2755, 0.9252, 0.8441, inf (the last step lands on sigma = 0).
 *
 * Cross-check by hand: DDIM's first step and PNDM's first call are the same update (phi with e0 is
 * DDIM's eq. 12), and both give 1.82938753291007 for the first element.
 */
import {
  DdimSampler,
  DpmSolverReference,
  DpmSolverSampler,
  ddimTimesteps,
  dpmSolverTimesteps,
  makeNoiseSchedule,
  PndmReference,
  PndmSampler,
  pndmTimesteps,
  roundHalfEven,
  type Sampler,
  type SchedulerConfig,
  STABLE_DIFFUSION_SCHEDULER,
  samplerReference,
} from "@cxr/diffusion";
import { describe, expect, it } from "vitest";
import { expectClose, upload } from "../kernels/helpers.ts";

const sd: SchedulerConfig = { ...STABLE_DIFFUSION_SCHEDULER };
const start = Float64Array.from([1, -0.5, 0.25]);
const epsilon = (k: number) => Float64Array.from([0.3 + 0.1 * k, -0.5 + 0.2 * k * k, 1 - 0.25 * k]);

/** x after each call, from the numpy script above (float64). */
const GOLDEN = {
  ddim: [
    [1.8293875329100737, -0.4571246553781456, -0.7519429103328372],
    [2.556610032806721, -0.4870849113441801, -1.7445323783025772],
    [2.7874737025691916, -0.7905664870075443, -2.454319911144189],
    [2.781380437631271, -0.8066892690014096, -2.4584049584678533],
  ],
  pndm: [
    [1.8293875329100742, -0.45712465537814584, -0.7519429103328369],
    [1.764020517041947, -0.5878586871144005, -0.5885253706625185],
    [2.3026955765011534, -1.4500743266075307, -1.109746237538656],
    [2.4069052733320513, -3.0036554750530415, -1.5028988380513355],
    [2.398372626498206, -3.0491573536286665, -1.5008854306351873],
  ],
  dpm: [
    [2.733872672005915, -0.4897036252034244, -1.634932567683002],
    [5.474479673453036, -0.7872468997300961, -4.46556806932886],
    [8.116278919048888, -1.7018558066742298, -7.21764446615526],
    [9.470187751758148, -2.9778266187835554, -8.966854283296783],
  ],
};

const float64Tolerance = { atol: 1e-12, rtol: 1e-12 };
// f32 kernels: coefficients rounded to f32 and |x| up to 10, over up to 5 chained steps.
const gpuTolerance = { atol: 2e-6, rtol: 2e-6 };

async function runGpu(sampler: Sampler): Promise<Float64Array[]> {
  let sample = await upload(start, [1, 3]);
  const path: Float64Array[] = [];
  for (const [k, t] of sampler.timesteps.entries()) {
    const output = await upload(epsilon(k), [1, 3]);
    const next = sampler.step(output, t, sample);
    path.push(Float64Array.from(await next.download()));
    sample = next;
  }
  return path;
}

describe("golden sampler updates (published formulas, non-constant epsilon)", () => {
  it("DDIM eq. 12, 4 steps at 751, 501, 251, 1: float64 reference and GPU", async () => {
    expect(ddimTimesteps(sd, 4)).toEqual([751, 501, 251, 1]);
    let x: Float64Array = start;
    for (const [k, t] of [751, 501, 251, 1].entries()) {
      x = samplerReference.ddimStep(sd, 4, epsilon(k), t, x, 0);
      expectClose(x, GOLDEN.ddim[k], float64Tolerance, `DDIM reference call ${k}`);
    }
    const path = await runGpu(new DdimSampler(sd, 4));
    for (const [k, x] of path.entries()) expectClose(x, GOLDEN.ddim[k], gpuTolerance, `DDIM GPU call ${k}`);
  });

  it("PNDM (PLMS with the skip_prk_steps warm-up), 5 calls at 751, 501, 501, 251, 1", async () => {
    expect(pndmTimesteps(sd, 4)).toEqual([751, 501, 501, 251, 1]);
    const reference = new PndmReference(sd, 4);
    let x: Float64Array = start;
    for (const [k, t] of [751, 501, 501, 251, 1].entries()) {
      x = reference.step(epsilon(k), t, x);
      expectClose(x, GOLDEN.pndm[k], float64Tolerance, `PNDM reference call ${k}`);
    }
    const path = await runGpu(new PndmSampler(sd, 4));
    for (const [k, x] of path.entries()) expectClose(x, GOLDEN.pndm[k], gpuTolerance, `PNDM GPU call ${k}`);
  });

  it("DPM-Solver++(2M), 4 steps at 999, 749, 500, 250 (linspace): float64 reference and GPU", async () => {
    const config = { ...sd, timestepSpacing: "linspace" as const, stepsOffset: 0 };
    expect(dpmSolverTimesteps(config, 4)).toEqual([999, 749, 500, 250]);
    const reference = new DpmSolverReference(config, 4);
    let x: Float64Array = start;
    for (const [k, t] of [999, 749, 500, 250].entries()) {
      x = reference.step(epsilon(k), t, x);
      expectClose(x, GOLDEN.dpm[k], float64Tolerance, `DPM-Solver++ reference step ${k}`);
    }
    const sampler = new DpmSolverSampler(config, 4);
    expect([0, 1, 2, 3].map((index) => sampler.coefficients(index).order)).toEqual([1, 2, 2, 1]);
    const path = await runGpu(sampler);
    for (const [k, x] of path.entries())
      expectClose(x, GOLDEN.dpm[k], gpuTolerance, `DPM-Solver++ GPU step ${k}`);
  });

  it("the golden numbers depend on the multistep weights (wrong weights would fail)", () => {
    const abar = makeNoiseSchedule(sd).alphasCumprod;
    // DPM-Solver++ with first-order steps only (= DDIM along the same timesteps, ending at abar = 1).
    let x: Float64Array = start;
    const times = [999, 749, 500, 250];
    times.forEach((t, k) => {
      const a = abar[t];
      const next = k + 1 < times.length ? abar[times[k + 1]] : 1;
      const e = epsilon(k);
      x = x.map((value, i) => {
        const x0 = (value - Math.sqrt(1 - a) * e[i]) / Math.sqrt(a);
        return Math.sqrt(next) * x0 + Math.sqrt(1 - next) * e[i];
      });
    });
    const dpmGap = Math.max(...x.map((value, i) => Math.abs(value - GOLDEN.dpm[3][i])));
    expect(dpmGap).toBeGreaterThan(0.05);
    // PLMS storing e1 after the warm-up (a plausible mistake): call 2 would combine (3 e2 - e1) / 2.
    const phi = (xt: Float64Array, t: number, to: number, e: Float64Array) => {
      const a = abar[t];
      const ap = abar[to];
      const denominator = a * Math.sqrt(1 - ap) + Math.sqrt(a * (1 - a) * ap);
      return xt.map((value, i) => Math.sqrt(ap / a) * value - ((ap - a) * e[i]) / denominator);
    };
    const e1 = epsilon(1);
    const e2 = epsilon(2);
    const wrong = phi(
      Float64Array.from(GOLDEN.pndm[1]),
      501,
      251,
      e2.map((value, i) => (3 * value - e1[i]) / 2),
    );
    const pndmGap = Math.max(...wrong.map((value, i) => Math.abs(value - GOLDEN.pndm[2][i])));
    expect(pndmGap).toBeGreaterThan(0.01);
  });
});

describe("timestep spacing as diffusers' set_timesteps (numpy values worked by hand)", () => {
  it("numpy rounds halves to even", () => {
    expect([0.5, 1.5, 2.5, 499.5, 500.5, 2.4, 2.6].map(roundHalfEven)).toEqual([0, 2, 2, 500, 500, 2, 3]);
  });

  it('"leading": k * floor(T/n) + steps_offset', () => {
    // floor(1000/10) = 100: 9 * 100 + 1 = 901 ... 1.
    expect(ddimTimesteps(sd, 10)).toEqual([901, 801, 701, 601, 501, 401, 301, 201, 101, 1]);
    // DPM-Solver spreads n + 1 points: floor(1000/11) = 90: 10 * 90 + 1 = 901, 811, ..., 91.
    expect(dpmSolverTimesteps(sd, 10)).toEqual([901, 811, 721, 631, 541, 451, 361, 271, 181, 91]);
  });

  it('"trailing": round(T - k T/n) - 1', () => {
    const trailing = { ...sd, timestepSpacing: "trailing" as const };
    expect(ddimTimesteps(trailing, 10)).toEqual([999, 899, 799, 699, 599, 499, 399, 299, 199, 99]);
    // 1000/3 = 333.33: 1000 - 333.33 = 666.67 -> 667 - 1 = 666; 333.33 -> 333 - 1 = 332.
    expect(ddimTimesteps(trailing, 3)).toEqual([999, 666, 332]);
    expect(dpmSolverTimesteps(trailing, 3)).toEqual([999, 666, 332]);
    // numpy's arange gives 62 values for 61 steps (the 62nd, -1, is left out here): ends 32, 15.
    const sixtyOne = ddimTimesteps(trailing, 61);
    expect(sixtyOne.length).toBe(61);
    expect(sixtyOne.slice(-2)).toEqual([32, 15]);
    // PNDM over trailing: ascending [99, ..., 899, 999] + the second-highest repeated, reversed.
    expect(pndmTimesteps(trailing, 10).slice(0, 4)).toEqual([999, 899, 899, 799]);
  });

  it('"linspace": round(linspace(0, T-1, n)) reversed', () => {
    const linspace = { ...sd, timestepSpacing: "linspace" as const };
    // 999/9 = 111: 999, 888, ..., 111, 0.
    expect(ddimTimesteps(linspace, 10)).toEqual([999, 888, 777, 666, 555, 444, 333, 222, 111, 0]);
    // DPM-Solver: linspace(0, 999, 11) = 0, 99.9, ..., 499.5 (-> 500, half to even), ..., 999.
    expect(dpmSolverTimesteps(linspace, 10)).toEqual([999, 899, 799, 699, 599, 500, 400, 300, 200, 100]);
  });

  it("rejects unknown spacings and step counts naming the value", () => {
    expect(() => ddimTimesteps({ ...sd, timestepSpacing: "even" as never }, 10)).toThrow(
      'scheduler: unknown timestep spacing "even" (leading, trailing, linspace)',
    );
    expect(() => dpmSolverTimesteps(sd, 0)).toThrow(/inference steps must be an integer in \[1, 1000\]/);
  });
});
