/**
 * The model-level bench runner (bench/models.ts) on a tiny case built here from public ops: it times
 * steps, keeps one step's per-kernel breakdown, and fills PyTorch's column from the twin script's
 * JSON line, or says why it is empty (no interpreter, no torch, a failing script) instead of crashing.
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  DEFAULT_PYTHON,
  formatModelBench,
  runModelBenchCase,
  runPytorchTwin,
} from "../../packages/kernels/src/bench/models.ts";
import {
  backward,
  type Gpu,
  type ModelBenchCase,
  matmul,
  relu,
  Tensor,
} from "../../packages/kernels/src/index.ts";
import { createGpu } from "../../packages/kernels/src/runtime/device.ts";
import { gpu as unprofiledGpu } from "./helpers.ts";

const HAS_PYTHON = existsSync(DEFAULT_PYTHON);
const dir = mkdtempSync(join(tmpdir(), "cxr-model-bench-"));
let profiled: Gpu | null = null;
/** The breakdown needs timestamp records: a device of its own, created with the profiler on. */
async function gpu(): Promise<Gpu> {
  profiled ??= await createGpu({ profile: true });
  return profiled;
}
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
  profiled?.destroy();
});

function script(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

/** A twin that reports 12.5 ms per step and echoes its arguments' step count. */
const FAKE_TWIN = `import json, sys
args = sys.argv[1:]
assert args[:2] == ["tiny", "--n"], args
print("noise before the figure")
print(json.dumps({"seconds_per_step": 0.0125, "threads": int(args[args.index("--threads") + 1]), "torch": "fake"}))
`;

function tinyCase(twin: string): ModelBenchCase {
  return {
    name: "tiny MLP step",
    source: "test",
    shape: "8x16 -> 16 -> 4",
    work: "forward + backward",
    setup(device: Gpu) {
      const x = Tensor.upload(device, new Float32Array(8 * 16).fill(0.5), [8, 16]);
      const w1 = Tensor.upload(device, new Float32Array(16 * 16).fill(0.1), [16, 16]).trainable();
      const w2 = Tensor.upload(device, new Float32Array(16 * 4).fill(0.2), [16, 4]).trainable();
      const gradOutput = Tensor.upload(device, new Float32Array(8 * 4).fill(1), [8, 4]);
      return {
        step() {
          const out = matmul(relu(matmul(x, w1)), w2);
          backward(out, gradOutput);
          out.release();
          for (const w of [w1, w2]) {
            w.grad?.release();
            w.grad = null;
          }
        },
        dispose() {
          for (const tensor of [x, w1, w2, gradOutput]) tensor.release();
        },
      };
    },
    pytorch: { script: twin, args: ["tiny", "--n", "8"] },
  };
}

describe("model bench runner", () => {
  it.skipIf(!HAS_PYTHON)(
    "times our steps, breaks them down per kernel and reads PyTorch's figure",
    async () => {
      const result = await runModelBenchCase(await gpu(), tinyCase(script("twin.py", FAKE_TWIN)), {
        steps: 2,
        threads: 3,
      });
      expect(result.milliseconds).toBeGreaterThan(0);
      expect(result.steps).toBe(2);
      // One step: two matmuls forward, their gradients backward; FLOPs at least the forward's.
      const matmuls = result.kernels.filter((row) => row.name.startsWith("matmul"));
      expect(matmuls.reduce((total, row) => total + row.calls, 0)).toBeGreaterThanOrEqual(2);
      expect(result.flops).toBeGreaterThanOrEqual(2 * 8 * 16 * 16 + 2 * 8 * 16 * 4);
      expect(result.pytorch).toEqual({ milliseconds: 12.5, threads: 3, version: "fake" });
      expect(result.pytorchUnavailable).toBeNull();
      const text = formatModelBench([{ ...result, rooflineFraction: 0.25 }]);
      expect(text).toContain("| tiny MLP step | test | 8x16 -> 16 -> 4 | forward + backward |");
      expect(text).toMatch(/\| 25\.0% \| 12\.5 \| [0-9.]+x \|/);
      expect(text).toContain("per-kernel breakdown of one step (2 timed steps)");
      expect(text).toMatch(/\nmatmul\s+\S+\s+2\s/);
      expect(text).toContain("PyTorch fake (CPU, 3 threads), same step: 12.5 ms");
    },
  );

  it("says why PyTorch's column is empty instead of failing", async () => {
    const missing = await runModelBenchCase(await gpu(), tinyCase("unused.py"), {
      steps: 1,
      python: "/nonexistent/python3",
    });
    expect(missing.pytorch).toBeNull();
    expect(missing.pytorchUnavailable).toBe("/nonexistent/python3 not found");
    expect(formatModelBench([missing])).toContain(
      "PyTorch column unavailable: /nonexistent/python3 not found",
    );
    const skipped = await runModelBenchCase(await gpu(), tinyCase("unused.py"), { steps: 1, python: null });
    expect(skipped.pytorchUnavailable).toBe("not run (--no-pytorch)");
  });

  it.skipIf(!HAS_PYTHON)(
    "names a missing torch, a failing script and a script without a figure",
    async () => {
      const run = { steps: 1, warmup: 1, threads: 1 };
      const noTorch = script("no_torch.py", "import torch_is_not_here_either as torch\n");
      expect(await runPytorchTwin(DEFAULT_PYTHON, noTorch, [], run)).toBe(
        `torch_is_not_here_either is not installed for ${DEFAULT_PYTHON}`,
      );
      const failing = script("failing.py", "raise SystemExit('bad config: channels must be > 0')\n");
      expect(await runPytorchTwin(DEFAULT_PYTHON, failing, [], run)).toBe(
        `${failing} failed: bad config: channels must be > 0`,
      );
      const silent = script("silent.py", "print('done')\n");
      expect(await runPytorchTwin(DEFAULT_PYTHON, silent, [], run)).toBe(
        `${silent} printed no JSON line: done`,
      );
      const zero = script("zero.py", "print('{\"seconds_per_step\": 0}')\n");
      expect(await runPytorchTwin(DEFAULT_PYTHON, zero, [], run)).toBe(`${zero} printed no seconds_per_step`);
    },
  );

  it("rejects impossible step counts and a device without the profiler", async () => {
    await expect(runModelBenchCase(await unprofiledGpu(), tinyCase("unused.py"))).rejects.toThrow(
      "model bench: the per-kernel breakdown needs a device created with { profile: true }",
    );
    await expect(runModelBenchCase(await gpu(), tinyCase("unused.py"), { steps: 0 })).rejects.toThrow(
      "model bench: steps must be >= 1, got 0",
    );
  });
});
