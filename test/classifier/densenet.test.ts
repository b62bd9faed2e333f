/**
 * DenseNet: torchvision's names and parameter count, forward and backward through every part of a
 * small DenseNet-BC, and the weight loader's refusals. Numerical agreement with torchvision is
 * `densenet-parity.test.ts`.
 */
import {
  DenseNet,
  denseNetConfig,
  denseNetStateProblems,
  loadDenseNetState,
  minimumImageSize,
  normalizeTorchvisionNames,
} from "@cxr/classifier";
import {
  backward,
  bceWithLogitsLoss,
  createGpu,
  defaultGpu,
  type Gpu,
  noGrad,
  Tensor,
  tidy,
} from "@cxr/kernels";
import { beforeAll, describe, expect, it } from "vitest";

let gpu: Gpu;
beforeAll(async () => {
  gpu = await defaultGpu();
});

function randomImages(count: number, seed: number): Float32Array {
  let state = seed;
  return Float32Array.from({ length: count }, () => {
    state = (state * 1103515245 + 12345) % 2147483648;
    return (state / 2147483648) * 2 - 1;
  });
}

describe("DenseNet-121", () => {
  it("has torchvision's parameter names, shapes and count (1 input channel, 14 labels)", () => {
    const model = new DenseNet(gpu, denseNetConfig("densenet121"));
    try {
      // torchvision.models.densenet121(num_classes=14) with a 1-channel conv0: 6,961,934 parameters
      // in 364 tensors; its state dict has 727 entries, 121 of them num_batches_tracked.
      expect(model.parameterCount()).toBe(6_961_934);
      expect(model.parameters().length).toBe(364);
      const names = [...model.stateTensors().keys()];
      expect(names.length).toBe(727 - 121);
      const shapes = new Map([...model.stateTensors()].map(([name, tensor]) => [name, tensor.shape]));
      expect(shapes.get("features.conv0.weight")).toEqual([64, 1, 7, 7]);
      expect(shapes.get("features.denseblock1.denselayer1.norm1.running_var")).toEqual([64]);
      expect(shapes.get("features.denseblock1.denselayer1.conv1.weight")).toEqual([128, 64, 1, 1]);
      expect(shapes.get("features.denseblock1.denselayer6.conv2.weight")).toEqual([32, 128, 3, 3]);
      expect(shapes.get("features.transition1.conv.weight")).toEqual([128, 256, 1, 1]);
      expect(shapes.get("features.denseblock3.denselayer24.norm1.weight")).toEqual([992]);
      expect(shapes.get("features.transition3.conv.weight")).toEqual([512, 1024, 1, 1]);
      expect(shapes.get("features.denseblock4.denselayer16.conv2.weight")).toEqual([32, 128, 3, 3]);
      expect(shapes.get("features.norm5.weight")).toEqual([1024]);
      expect(shapes.get("classifier.weight")).toEqual([14, 1024]);
      expect(shapes.get("classifier.bias")).toEqual([14]);
      expect(model.featureWidth).toBe(1024);
      expect(minimumImageSize(model.config)).toBe(29);
    } finally {
      model.dispose();
    }
  });
});

describe("DenseNet-BC (tiny config)", () => {
  it("runs forward and backward through every layer, heads included", async () => {
    const config = denseNetConfig("densenet-bc-tiny", { attributes: { sex: true, age: true, race: true } });
    const model = new DenseNet(gpu, config);
    try {
      const batch = 3;
      const size = 17; // odd: exercises floor division in the pools
      const images = Tensor.upload(gpu, randomImages(batch * size * size, 5), [batch, 1, size, size]);
      const outputs = model.forwardAll(images);
      expect(outputs.findings.shape).toEqual([batch, 14]);
      expect(outputs.sex?.shape).toEqual([batch, 1]);
      expect(outputs.age?.shape).toEqual([batch, 1]);
      expect(outputs.race?.shape).toEqual([batch, 4]);
      const targets = Tensor.upload(
        gpu,
        Float32Array.from({ length: batch * 14 }, (_, i) => i % 2),
        [batch, 14],
      );
      const loss = bceWithLogitsLoss(outputs.findings, targets);
      backward(loss);
      const lossValue = (await loss.download())[0];
      expect(Number.isFinite(lossValue)).toBe(true);
      // Every parameter on the path to the finding logits has a finite, non-zero gradient; the heads
      // were not in the loss and have none.
      for (const [name, parameter] of model.namedParameters()) {
        if (/_head\./.test(name)) {
          expect(parameter.grad, name).toBeNull();
          continue;
        }
        expect(parameter.grad, name).not.toBeNull();
        const grad = await parameter.grad!.download();
        expect(grad.every(Number.isFinite), name).toBe(true);
        expect(
          grad.some((value) => value !== 0),
          name,
        ).toBe(true);
      }
      for (const tensor of [images, targets, loss, outputs.sex!, outputs.age!, outputs.race!])
        tensor.release();
    } finally {
      model.dispose();
    }
  });

  it("rejects configs that cannot be built", () => {
    expect(
      () => new DenseNet(gpu, denseNetConfig("densenet-bc-tiny", { growthRate: 0, blockConfig: [] })),
    ).toThrow(/growthRate must be a positive integer, got 0; blockConfig needs at least one block/);
    expect(() => denseNetConfig("densenet-999")).toThrow(
      /unknown DenseNet config "densenet-999" \(choose from/,
    );
  });
});

/** Largest |a - b| relative to the largest |b| of the tensor (0 for equal tensors). */
function relativeDifference(a: Float32Array, b: Float32Array): number {
  let scale = 0;
  let worst = 0;
  for (let index = 0; index < b.length; index++) {
    scale = Math.max(scale, Math.abs(b[index]));
    worst = Math.max(worst, Math.abs(a[index] - b[index]));
  }
  return scale === 0 ? worst : worst / scale;
}

describe("memory-efficient dense blocks (memoryEfficient: true)", () => {
  it("train the same as the plain blocks (logits, loss, every gradient, running statistics) with less memory", async () => {
    const batch = 4;
    const size = 32; // the phantom config's blocks at 8, 4 and 2 px: 3, 6 and 8 layers deep
    const imageValues = randomImages(batch * size * size, 9);
    const targetValues = Float32Array.from({ length: batch * 14 }, (_, index) => (index % 3 === 0 ? 1 : 0));
    const step = async (memoryEfficient: boolean) => {
      const model = new DenseNet(gpu, denseNetConfig("densenet-bc-phantom", { seed: 3, memoryEfficient }));
      try {
        model.train();
        const images = Tensor.upload(gpu, imageValues, [batch, 1, size, size]);
        const targets = Tensor.upload(gpu, targetValues, [batch, 14]);
        await gpu.sync();
        const before = gpu.pool.snapshot().inUseBytes;
        gpu.pool.resetPeak();
        const logits = model.forward(images).retain();
        const loss = bceWithLogitsLoss(logits, targets);
        const heldForBackward = gpu.pool.snapshot().inUseBytes - before;
        backward(loss);
        const peak = gpu.pool.snapshot().peakInUseBytes - before;
        const grads = new Map<string, Float32Array>();
        for (const [name, parameter] of model.namedParameters()) {
          expect(parameter.grad, `no gradient for ${name}`).not.toBeNull();
          grads.set(name, await parameter.grad!.download());
        }
        const trained = {
          logits: await logits.download(),
          loss: (await loss.download())[0],
          grads,
          state: await model.state(),
          heldForBackward,
          peak,
        };
        model.eval();
        const evalLogits = noGrad(() => tidy(() => model.forward(images)));
        const result = { ...trained, evalLogits: await evalLogits.download() };
        for (const tensor of [images, targets, logits, loss, evalLogits]) {
          tensor.retained = false;
          tensor.release();
        }
        return result;
      } finally {
        model.dispose();
      }
    };
    const plain = await step(false);
    const efficient = await step(true);
    // The forward computes the same values with the same kernels: bit-identical.
    expect(Array.from(efficient.logits)).toEqual(Array.from(plain.logits));
    expect(efficient.loss).toBe(plain.loss);
    expect(Array.from(efficient.evalLogits)).toEqual(Array.from(plain.evalLogits));
    // Running statistics: updated once per step (the recomputation must not fold its batch
    // statistics in again, as torchvision's memory_efficient does under torch 1.13).
    for (const [name, entry] of plain.state) {
      expect(Array.from(efficient.state.get(name)!.data), name).toEqual(Array.from(entry.data));
    }
    // Gradients: the same sums, accumulated in another order (each piece's gradient arrives from
    // every later layer separately instead of through the concatenations' split-backs).
    expect(efficient.grads.size).toBe(115);
    for (const [name, grad] of plain.grads) {
      expect(relativeDifference(efficient.grads.get(name)!, grad), name).toBeLessThan(1e-5);
    }
    // The memory kept for backward and the step's peak are both smaller.
    expect(efficient.heldForBackward).toBeLessThan(0.75 * plain.heldForBackward);
    expect(efficient.peak).toBeLessThan(plain.peak);
  });

  it("rejects a non-boolean memoryEfficient", () => {
    expect(
      () =>
        new DenseNet(
          gpu,
          denseNetConfig("densenet-bc-tiny", { memoryEfficient: "yes" as unknown as boolean }),
        ),
    ).toThrow(/memoryEfficient must be true or false, got yes/);
  });
});

describe("DenseNet weight loading", () => {
  it("takes torchvision names (legacy ones too), drops num_batches_tracked, and lists every mismatch", async () => {
    const model = new DenseNet(gpu, denseNetConfig("densenet-bc-tiny"));
    try {
      const state = await model.state();
      const torchvision = new Map<string, { shape: readonly number[]; data: Float32Array }>();
      for (const [name, tensor] of state) {
        const legacy = name.replace(/(denselayer\d+\.(?:norm|conv))([12])\./, "$1.$2.");
        torchvision.set(legacy, { shape: tensor.shape, data: tensor.data.map((value) => value + 1) });
        if (name.endsWith("running_var"))
          torchvision.set(name.replace("running_var", "num_batches_tracked"), {
            shape: [],
            data: new Float32Array(1),
          });
      }
      expect(torchvision.has("features.denseblock1.denselayer1.norm.1.weight")).toBe(true);
      expect(normalizeTorchvisionNames(torchvision).size).toBe(state.size);
      loadDenseNetState(model, torchvision, "converted.safetensors");
      const loaded = await model.state();
      const conv = loaded.get("features.denseblock1.denselayer1.conv1.weight")!;
      const before = state.get("features.denseblock1.denselayer1.conv1.weight")!;
      expect(conv.data[0]).toBeCloseTo(before.data[0] + 1, 5);

      const broken = new Map(normalizeTorchvisionNames(torchvision));
      broken.delete("features.norm5.weight");
      broken.set("classifier.weight", { shape: [18, 16], data: new Float32Array(18 * 16) });
      broken.set("features.extra.weight", { shape: [1], data: new Float32Array(1) });
      const problems = denseNetStateProblems(model, broken);
      expect(problems.length).toBe(3);
      expect(problems.some((line) => line.startsWith('missing "features.norm5.weight"'))).toBe(true);
      expect(problems.some((line) => line.startsWith('"classifier.weight" is [18, 16] in the file'))).toBe(
        true,
      );
      expect(problems).toContain('unexpected "features.extra.weight"');
      const unchanged = (await model.state()).get("features.norm5.bias")!.data;
      expect(() => loadDenseNetState(model, broken, "bad.safetensors")).toThrow(
        /bad.safetensors does not fit DenseNet "densenet-bc-tiny" \(3 problems\)/,
      );
      expect((await model.state()).get("features.norm5.bias")!.data).toEqual(unchanged);
      // Published weights: another label count and no heads are fine when asked for.
      const headless = new DenseNet(
        gpu,
        denseNetConfig("densenet-bc-tiny", { attributes: { sex: true, age: false, race: false } }),
      );
      try {
        const published = new Map(normalizeTorchvisionNames(torchvision));
        published.set("classifier.weight", {
          shape: [18, headless.featureWidth],
          data: new Float32Array(18 * headless.featureWidth),
        });
        published.set("classifier.bias", { shape: [18], data: new Float32Array(18) });
        expect(() => loadDenseNetState(headless, published, "published")).toThrow(
          /missing "sex_head.weight"/,
        );
        loadDenseNetState(headless, published, "published", {
          allowMissingHeads: true,
          allowMissingClassifier: true,
        });
      } finally {
        headless.dispose();
      }
    } finally {
      model.dispose();
    }
  });
});

describe("cxr bench classifier (runClassifierBenchCase)", () => {
  it("times training and inference, reports peak memory and the kernels, and runs the PyTorch reference", async () => {
    const { runClassifierBenchCase, formatClassifierBench } = await import("@cxr/classifier");
    const profiled = await createGpu({ profile: true }); // as `cxr bench classifier` opens it
    const result = await runClassifierBenchCase(profiled, {
      config: "densenet-bc-tiny",
      imageSize: 32,
      batch: 4,
      steps: 1,
    });
    expect(result.parameters).toBeGreaterThan(0);
    expect(result.trainImagesPerSecond).toBeGreaterThan(0);
    expect(result.inferenceImagesPerSecond).toBeGreaterThan(0);
    expect(result.peakTrainingMemoryBytes).toBeGreaterThan(0);
    expect(result.kernels.some((row) => row.name === "conv2d")).toBe(true);
    expect(result.pytorchError).toBeNull();
    expect(result.pytorch?.trainImagesPerSecond).toBeGreaterThan(0);
    const efficient = await runClassifierBenchCase(
      profiled,
      { config: "densenet-bc-tiny", imageSize: 32, batch: 4, steps: 1, memoryEfficient: true },
      { pytorch: false },
    );
    expect(efficient.peakTrainingMemoryBytes).toBeGreaterThan(0);
    expect(efficient.pytorch).toBeNull();
    const text = formatClassifierBench(profiled, [result, efficient]);
    expect(text).toMatch(/\| densenet-bc-tiny \| 32 px \| 4 \| plain \|/);
    expect(text).toMatch(/\| densenet-bc-tiny \| 32 px \| 4 \| memory-efficient \|/);
    expect(text).toMatch(/load average/);
    profiled.destroy();
  });
});
