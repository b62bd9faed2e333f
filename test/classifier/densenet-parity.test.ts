/**
 * DenseNet-121 against torchvision's `densenet121` (Debian python3-torchvision 0.14 under
 * /usr/bin/python3; .ci/run and setup.sh install it): the same weights (ours, saved as
 * safetensors) and the same input, one training-mode step. Compared: the logits, the masked-BCE
 * loss, the gradient of every one of the 364 parameters, and every batch-norm running statistic
 * after the step (batch statistics, momentum 0.1, unbiased running variance).
 *
 * The architecture is full DenseNet-121 (121 layers, 6,961,934 parameters, all names); the input is
 * 2 images of 64x64 px, so block 4 runs at 2x2 and the test takes seconds rather than minutes on a
 * CPU adapter (at 224 px one training step of DenseNet-121 costs ~17 GFLOP per image). torchvision
 * computes in float64, we in float32.
 */
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { DenseNet, type DenseNetConfig, denseNetConfig, loadDenseNetWeights } from "@cxr/classifier";
import {
  backward,
  bceWithLogitsLoss,
  defaultGpu,
  readSafetensors,
  Tensor,
  writeSafetensors,
} from "@cxr/kernels";
import { describe, expect, it } from "vitest";
import { here, scratchFolder } from "./helpers.ts";

const PYTHON = "/usr/bin/python3";

function seededValues(count: number, seed: number, scale: number): Float32Array {
  let state = seed >>> 0;
  return Float32Array.from({ length: count }, () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return ((state / 4294967296) * 2 - 1) * scale;
  });
}

/**
 * Largest |ours - torchvision| over the tensor, relative to the tensor's largest |torchvision|
 * value: gradients of different layers differ by orders of magnitude, so each is judged on its own
 * scale.
 */
function relativeError(ours: Float32Array, reference: Float32Array): number {
  let scale = 0;
  let worst = 0;
  for (let index = 0; index < reference.length; index++) {
    scale = Math.max(scale, Math.abs(reference[index]));
    worst = Math.max(worst, Math.abs(ours[index] - reference[index]));
  }
  return scale === 0 ? worst : worst / scale;
}

interface ParityCase {
  config: DenseNetConfig;
  batch: number;
  size: number;
  /** Input seed, chosen so that no ReLU input lies within float32 rounding of zero (checked). */
  inputSeed: number;
  parameterTensors: number;
}

/**
 * One training-mode step on both sides. Tolerances: logits and running statistics within 1e-4 of
 * the float64 reference (relative to each tensor's largest value); each gradient within 4x PyTorch's
 * own float32 error on that tensor plus 2e-5. Some gradients are ill-conditioned (a batch-norm bias
 * gradient is a sum that cancels to a small remainder; the stem's norm0.weight shows 2-3% float32
 * error in PyTorch too), so a fixed tolerance would be either meaningless or unreachable in float32.
 */
async function expectParity(testCase: ParityCase): Promise<void> {
  const gpu = await defaultGpu();
  const folder = scratchFolder("densenet-parity");
  const model = new DenseNet(gpu, testCase.config);
  try {
    const { batch, size } = testCase;
    const imageValues = seededValues(batch * size * size, testCase.inputSeed, 1);
    const targetValues = Float32Array.from({ length: batch * 14 }, (_, index) =>
      (index * 7) % 3 === 0 ? 1 : 0,
    );
    const weightsPath = join(folder, "weights.safetensors");
    const inputsPath = join(folder, "inputs.safetensors");
    const outputPath = join(folder, "torchvision.safetensors");
    await model.save(weightsPath, { config: JSON.stringify(model.config) });
    writeSafetensors(inputsPath, {
      images: { shape: [batch, 1, size, size], data: imageValues },
      targets: { shape: [batch, 14], data: targetValues },
    });
    execFileSync(PYTHON, [join(here, "densenet_parity.py"), weightsPath, inputsPath, outputPath], {
      stdio: "pipe",
    });
    const reference = readSafetensors(outputPath).tensors;
    const tensor = (name: string) => {
      const found = reference.get(name);
      if (!found) throw new Error(`torchvision's output lacks ${name}`);
      return found.data;
    };
    expect(
      tensor("min_abs_relu_input")[0],
      "a ReLU input within float32 rounding of zero: the two sides may take different branches; choose another input seed",
    ).toBeGreaterThan(1e-6);

    model.train();
    const images = Tensor.upload(gpu, imageValues, [batch, 1, size, size]);
    const targets = Tensor.upload(gpu, targetValues, [batch, 14]);
    const logits = model.forward(images).retain();
    const loss = bceWithLogitsLoss(logits, targets);
    backward(loss);

    expect(relativeError(await logits.download(), tensor("logits")), "logits").toBeLessThan(1e-4);
    expect(Math.abs((await loss.download())[0] - tensor("loss")[0]), "loss").toBeLessThan(1e-5);

    let compared = 0;
    for (const [name, parameter] of model.namedParameters()) {
      expect(parameter.grad, `no gradient for ${name}`).not.toBeNull();
      const expected = tensor(`grad.${name}`);
      const ours = relativeError(await parameter.grad!.download(), expected);
      const pytorchFloat32 = relativeError(tensor(`f32.grad.${name}`), expected);
      expect(ours, `gradient of ${name} (PyTorch float32 error: ${pytorchFloat32})`).toBeLessThanOrEqual(
        4 * pytorchFloat32 + 2e-5,
      );
      compared++;
    }
    expect(compared).toBe(testCase.parameterTensors);

    let statistics = 0;
    for (const [name, entry] of await model.state()) {
      if (!/running_(mean|var)$/.test(name)) continue;
      expect(relativeError(entry.data, tensor(`state.${name}`)), name).toBeLessThan(1e-4);
      statistics++;
    }
    expect(statistics).toBe(
      2 * [...model.namedBuffers().keys()].filter((name) => name.endsWith("running_mean")).length,
    );
    for (const used of [images, targets, logits, loss]) {
      used.retained = false;
      used.release();
    }
  } finally {
    model.dispose();
  }
}

describe("DenseNet parity with torchvision (training mode: logits, loss, every gradient, running statistics)", () => {
  it("DenseNet-121, full architecture (121 layers, 364 parameter tensors), 2 images of 64 px", async () => {
    await expectParity({
      config: denseNetConfig("densenet121", { seed: 11 }),
      batch: 2,
      size: 64,
      inputSeed: 4,
      parameterTensors: 364,
    });
  }, 600_000); // 147 s under Bun at load average 19 on the shared 2-core machine, near the 180 s default

  it("DenseNet-121 with memory-efficient dense blocks (recomputed in backward) against torchvision's plain blocks", async () => {
    // torchvision's own memory_efficient=True (torch 1.13) folds norm1's batch statistics into the
    // running buffers twice per step (once more when its checkpoint recomputes); ours does not, so
    // the reference is torchvision's plain network (densenet_parity.py ignores memoryEfficient).
    await expectParity({
      config: denseNetConfig("densenet121", { seed: 11, memoryEfficient: true }),
      batch: 2,
      size: 64,
      inputSeed: 4,
      parameterTensors: 364,
    });
  }, 600_000); // one more torchvision run and the recomputation: minutes on a loaded 2-core machine

  it("the phantom DenseNet-BC (3x3/2 stem, max-pool, three blocks), 4 images of 64 px", async () => {
    const config = denseNetConfig("densenet-bc-phantom", { seed: 5 });
    await expectParity({ config, batch: 4, size: 64, inputSeed: 2, parameterTensors: 115 });
  });
});

describe("published weights", () => {
  it("a torchvision densenet121 checkpoint (ImageNet layout: 3 channels, 1000 classes, legacy names) converts and loads by name", async () => {
    const gpu = await defaultGpu();
    const folder = scratchFolder("densenet-convert");
    const checkpoint = join(folder, "densenet121.pth");
    const converted = join(folder, "densenet121.safetensors");
    // A state dict as torchvision's ImageNet file stores it: pre-0.2 names ("norm.1") for dense layers.
    const script = [
      "import re, sys, torch, torchvision",
      "torch.manual_seed(0)",
      "state = torchvision.models.densenet121().state_dict()",
      "legacy = {re.sub(r'(denselayer\\d+\\.(?:norm|conv))([12])\\.', r'\\1.\\2.', k): v for k, v in state.items()}",
      "torch.save(legacy, sys.argv[1])",
      "print(float(state['features.conv0.weight'].sum(dim=1)[5, 3, 2]), float(state['features.denseblock2.denselayer3.norm1.running_var'][7]))",
    ].join("\n");
    const printed = execFileSync(PYTHON, ["-c", script, checkpoint], { encoding: "utf8" })
      .trim()
      .split(" ")
      .map(Number);
    execFileSync(
      PYTHON,
      [
        join(here, "../../packages/classifier/scripts/convert_densenet.py"),
        checkpoint,
        converted,
        "--sum-rgb",
      ],
      { stdio: "pipe" },
    );
    const model = new DenseNet(gpu, denseNetConfig("densenet121"));
    try {
      expect(() => loadDenseNetWeights(model, converted)).toThrow(
        /"classifier.weight" is \[1000, 1024\] in the file, the model needs \[14, 1024\]/,
      );
      loadDenseNetWeights(model, converted, { allowMissingClassifier: true });
      const state = await model.state();
      const conv0 = state.get("features.conv0.weight")!.data;
      expect(conv0[(5 * 7 + 3) * 7 + 2]).toBeCloseTo(printed[0], 5);
      expect(state.get("features.denseblock2.denselayer3.norm1.running_var")!.data[7]).toBeCloseTo(
        printed[1],
        5,
      );
    } finally {
      model.dispose();
    }
  });
});
