/**
 * conv2d's packed weight cache (ops/conv2d/weight-cache.ts): the CPU variants pack a weight once per
 * version, not once per call, and never read a stale texture after the weight changes, whichever way
 * it changes (`write()`, an optimiser step, a kernel, `writeBytes()`, a checkpoint load, an EMA swap,
 * a raw write through `Tensor.buffer`, a released buffer handed to a new tensor).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  AdamW,
  backward,
  Conv2d,
  type Conv2dVariant,
  conv2d,
  conv2dBackwardInput,
  conv2dReference,
  Ema,
  type Gpu,
  noGrad,
  ParameterInit,
  releaseConv2dScratch,
  type Shape,
  sizeOf,
  Tensor,
} from "@cxr/kernels";
import { describe, expect, it } from "vitest";
import { weightCacheStats } from "../../packages/kernels/src/ops/conv2d/weight-cache.ts";
import { matmulCanUseSubgroups } from "../../packages/kernels/src/ops/matmul/cpu-subgroup.ts";
import { expectClose, gpu, randomValues } from "./helpers.ts";

const X: Shape = [2, 6, 7, 5];
const W: Shape = [5, 6, 3, 3];
const OPTIONS = { padding: 1 } as const;
const TOLERANCE = { atol: 1e-4, rtol: 1e-5 };

/** The CPU variants this adapter can run (cpu-subgroup needs subgroups of >= 8 lanes). */
async function cpuVariants(): Promise<Conv2dVariant[]> {
  const device = await gpu();
  return matmulCanUseSubgroups(device) ? ["cpu-texture", "cpu-subgroup"] : ["cpu-texture"];
}

/** Packs per forward + input gradient: cpu-subgroup reads the forward's layout in both passes. */
const PACKS_PER_STEP: Record<string, number> = { "cpu-texture": 2, "cpu-subgroup": 1 };

function packsDuring(device: Gpu, body: () => void): number {
  const before = weightCacheStats(device).packs;
  body();
  return weightCacheStats(device).packs - before;
}

async function expectForward(y: Tensor, x: Float64Array, w: Float64Array, label: string) {
  const want = conv2dReference.forward(x, X, w, W, null, OPTIONS);
  expectClose(await y.download(), want, TOLERANCE, label);
}

describe("conv2d packed weight cache", () => {
  it("packs a weight once per step and not again while it is unchanged", async () => {
    const device = await gpu();
    for (const variant of await cpuVariants()) {
      const x = Tensor.upload(device, Float32Array.from(randomValues(sizeOf(X), 1)), X).trainable();
      const w = Tensor.upload(device, Float32Array.from(randomValues(sizeOf(W), 2)), W).trainable();
      const options = { ...OPTIONS, variant };
      const step = packsDuring(device, () => {
        const y = conv2d(x, w, null, options);
        backward(y, Tensor.upload(device, Float32Array.from(randomValues(y.size, 3)), y.shape));
        y.release();
      });
      expect(step, variant).toBe(PACKS_PER_STEP[variant]);
      // A sampling loop: the same convolution again and again, no pack at all.
      const hitsBefore = weightCacheStats(device).hits;
      const again = packsDuring(device, () =>
        noGrad(() => {
          for (let call = 0; call < 4; call++) conv2d(x, w, null, options).release();
        }),
      );
      expect(again, variant).toBe(0);
      expect(weightCacheStats(device).hits - hitsBefore, variant).toBe(4);
      // After a write, exactly one pack of the new version.
      w.write(Float32Array.from(randomValues(sizeOf(W), 4)));
      const afterWrite = packsDuring(device, () =>
        noGrad(() => {
          conv2d(x, w, null, options).release();
          conv2d(x, w, null, options).release();
        }),
      );
      expect(afterWrite, variant).toBe(1);
      for (const tensor of [x, w]) tensor.release();
    }
  });

  it("follows write(), an AdamW step and a kernel writing the weight, with no download in between", async () => {
    const device = await gpu();
    for (const variant of await cpuVariants()) {
      const options = { ...OPTIONS, variant };
      const xs = randomValues(sizeOf(X), 11);
      const w1 = randomValues(sizeOf(W), 12);
      const w2 = randomValues(sizeOf(W), 13);
      const x = Tensor.upload(device, Float32Array.from(xs), X);
      const w = Tensor.upload(device, Float32Array.from(w1), W).trainable();
      // All in one command batch: the re-pack must land between the two convolutions.
      const y1 = noGrad(() => conv2d(x, w, null, options));
      w.write(Float32Array.from(w2));
      const y2 = noGrad(() => conv2d(x, w, null, options));
      await expectForward(y1, xs, w1, `${variant} before write()`);
      await expectForward(y2, xs, w2, `${variant} after write()`);
      // An optimiser step (a kernel binding w read_write) between two convolutions.
      const y3 = conv2d(x, w, null, options);
      backward(y3, Tensor.upload(device, Float32Array.from(randomValues(y3.size, 14)), y3.shape));
      new AdamW([w], { learningRate: 0.5 }).step();
      const y4 = noGrad(() => conv2d(x, w, null, options));
      const stepped = Float64Array.from(await w.download());
      expect(Math.max(...stepped.map((value, index) => Math.abs(value - w2[index])))).toBeGreaterThan(0.1);
      await expectForward(y4, xs, stepped, `${variant} after an AdamW step`);
      // The input gradient after the step reads the new weight too.
      const gradOutput = randomValues(y4.size, 15);
      const dx = conv2dBackwardInput(
        Tensor.upload(device, Float32Array.from(gradOutput), y4.shape),
        w,
        X,
        options,
      );
      const wantDx = conv2dReference.backwardInput(gradOutput, X, stepped, W, OPTIONS);
      expectClose(await dx.download(), wantDx, TOLERANCE, `${variant} input gradient after the step`);
      for (const tensor of [x, w, y1, y2, y3, y4, dx]) tensor.release();
    }
  });

  it("follows writeBytes(), re-packs a raw buffer on every call, and follows a reused buffer", async () => {
    const device = await gpu();
    for (const variant of await cpuVariants()) {
      const options = { ...OPTIONS, variant };
      const xs = randomValues(sizeOf(X), 21);
      const x = Tensor.upload(device, Float32Array.from(xs), X);
      const w1 = randomValues(sizeOf(W), 22);
      const w = Tensor.upload(device, Float32Array.from(w1), W);
      conv2d(x, w, null, options).release();
      // What pretrained loaders do: queue.writeBuffer through writeBytes (it submits the batch first).
      const w2 = randomValues(sizeOf(W), 23);
      const afterBytes = packsDuring(device, () => {
        w.writeBytes(Float32Array.from(w2));
        conv2d(x, w, null, options).release();
      });
      expect(afterBytes, variant).toBe(1);
      await expectForward(conv2d(x, w, null, options), xs, w2, `${variant} after writeBytes()`);
      // Writes our runtime cannot see: the raw buffer taken once through Tensor.buffer and written
      // later. From then on the weight has no version, so every call packs it again, none stale.
      device.flush();
      const raw = w.buffer;
      const w3 = randomValues(sizeOf(W), 24);
      device.device.queue.writeBuffer(raw, 0, Float32Array.from(w3));
      const before = weightCacheStats(device);
      await expectForward(conv2d(x, w, null, options), xs, w3, `${variant} after a raw queue.writeBuffer`);
      const w4 = randomValues(sizeOf(W), 25);
      device.device.queue.writeBuffer(raw, 0, Float32Array.from(w4));
      await expectForward(conv2d(x, w, null, options), xs, w4, `${variant} after a second raw write`);
      const after = weightCacheStats(device);
      expect(after.unversioned - before.unversioned, variant).toBe(2);
      expect(after.hits - before.hits, variant).toBe(0);
      // The pool hands the released buffer to the next tensor of the same size class, versioned again.
      const buffer = w.bufferFor("read");
      w.release();
      const w5 = randomValues(sizeOf(W), 26);
      const next = Tensor.upload(device, Float32Array.from(w5), W);
      expect(next.bufferFor("read")).toBe(buffer);
      await expectForward(conv2d(x, next, null, options), xs, w5, `${variant} on a reused buffer`);
      const hitsBefore = weightCacheStats(device).hits;
      expect(
        packsDuring(device, () => conv2d(x, next, null, options).release()),
        variant,
      ).toBe(0);
      expect(weightCacheStats(device).hits - hitsBefore, variant).toBe(1);
      for (const tensor of [x, next]) tensor.release();
    }
  });

  it("follows a checkpoint load and an EMA swap (copies into the weight), with no download in between", async () => {
    const device = await gpu();
    const directory = mkdtempSync(join(tmpdir(), "weight-cache-"));
    try {
      for (const variant of await cpuVariants()) {
        const options = { ...OPTIONS, variant };
        const xs = randomValues(sizeOf(X), 41);
        const x = Tensor.upload(device, Float32Array.from(xs), X);
        const layer = new Conv2d(device, W[1], W[0], W[2], new ParameterInit(1), { bias: false });
        const saved = new Conv2d(device, W[1], W[0], W[2], new ParameterInit(2), { bias: false });
        const path = join(directory, `${variant}.safetensors`);
        await saved.save(path);
        const savedWeights = Float64Array.from(await saved.weight.download());
        const ownWeights = Float64Array.from(await layer.weight.download());
        // Module.load (loadState: write() into the same buffer) between two convolutions of one batch.
        const y1 = noGrad(() => conv2d(x, layer.weight, null, options));
        layer.load(path);
        const y2 = noGrad(() => conv2d(x, layer.weight, null, options));
        await expectForward(y1, xs, ownWeights, `${variant} before the checkpoint load`);
        await expectForward(y2, xs, savedWeights, `${variant} after the checkpoint load`);
        // Ema keeps the loaded weights as its average; a write moves the weight, swap() copies the
        // average back into it (copyFrom), and swap() again returns the written weights.
        const ema = new Ema([layer.weight.trainable()]);
        const written = randomValues(sizeOf(W), 42);
        layer.weight.write(Float32Array.from(written));
        const y3 = noGrad(() => conv2d(x, layer.weight, null, options));
        ema.swap();
        const y4 = noGrad(() => conv2d(x, layer.weight, null, options));
        ema.swap();
        const y5 = noGrad(() => conv2d(x, layer.weight, null, options));
        await expectForward(y3, xs, written, `${variant} after write()`);
        await expectForward(y4, xs, savedWeights, `${variant} after Ema.swap()`);
        await expectForward(y5, xs, written, `${variant} after the second Ema.swap()`);
        for (const tensor of [x, y1, y2, y3, y4, y5]) tensor.release();
        for (const module of [layer, saved]) module.dispose();
        ema.release();
      }
    } finally {
      rmSync(directory, { recursive: true, force: true });
    }
  });

  it("releaseConv2dScratch drops every cached texture", async () => {
    const device = await gpu();
    const [variant] = await cpuVariants();
    const x = Tensor.upload(device, Float32Array.from(randomValues(sizeOf(X), 31)), X);
    const w = Tensor.upload(device, Float32Array.from(randomValues(sizeOf(W), 32)), W);
    conv2d(x, w, null, { ...OPTIONS, variant }).release();
    expect(weightCacheStats(device).entries).toBeGreaterThan(0);
    releaseConv2dScratch(device);
    expect(weightCacheStats(device)).toMatchObject({ entries: 0, bytes: 0 });
    expect(packsDuring(device, () => conv2d(x, w, null, { ...OPTIONS, variant }).release())).toBe(1);
    for (const tensor of [x, w]) tensor.release();
  });
});
