/**
 * A training step that also loads module state and reads the optimizer's state submits no more
 * command buffers than the plain step: `Module.loadState` and `AdamW.state()` write through
 * `Tensor.write` (a staging copy recorded in the current batch), not a flush plus
 * `queue.writeBuffer`. The loaded values still land in queue order (checked against an explicitly
 * flushed run).
 */
import {
  AdamW,
  backward,
  defaultGpu,
  type Gpu,
  Linear,
  Module,
  mseLoss,
  ParameterInit,
  relu,
  Tensor,
} from "@cxr/kernels";
import { describe, expect, it } from "vitest";
import { randomValues } from "./helpers.ts";

class TwoLayers extends Module {
  readonly first: Linear;
  readonly second: Linear;
  constructor(gpu: Gpu, seed: number) {
    super(gpu);
    const init = new ParameterInit(seed);
    this.first = this.child("first", new Linear(gpu, 3, 8, init));
    this.second = this.child("second", new Linear(gpu, 8, 2, init));
  }
  forward(x: Tensor): Tensor {
    return this.second.forward(relu(this.first.forward(x)));
  }
}

type State = Map<string, { shape: readonly number[]; data: Float32Array }>;

/**
 * One step on a fresh model (seed 5): forward, backward, then optionally a state load (`load`, after
 * an explicit flush when `flushFirst`) and a read of the optimizer state, then the update. Returns
 * the submits the step took (through the loss download) and the parameters after it.
 */
async function trainingStep(
  gpu: Gpu,
  options: { load?: State; flushFirst?: boolean },
): Promise<{ submits: number; after: State }> {
  const model = new TwoLayers(gpu, 5);
  const optimizer = new AdamW(model.parameters(), {
    learningRate: 1e-2,
    parameterNames: [...model.namedParameters().keys()],
  });
  const x = Tensor.upload(gpu, randomValues(4 * 3, 1), [4, 3]);
  const target = Tensor.upload(gpu, randomValues(4 * 2, 2), [4, 2]);
  await gpu.sync();
  const before = gpu.submitCount;
  const loss = mseLoss(model.forward(x), target);
  backward(loss);
  if (options.load) {
    if (options.flushFirst) gpu.flush();
    model.loadState(options.load);
    optimizer.state();
  }
  optimizer.step();
  optimizer.zeroGrad();
  await loss.download();
  const submits = gpu.submitCount - before;
  const after = await model.state();
  for (const tensor of [x, target, loss, ...model.parameters()]) tensor.release();
  return { submits, after };
}

describe("training step submits", () => {
  it("a step with AdamW plus a module state load submits no more than the plain step", async () => {
    const gpu = await defaultGpu();
    const other = await new TwoLayers(gpu, 9).state(); // different weights to load mid-step
    const plain = await trainingStep(gpu, {});
    const loaded = await trainingStep(gpu, { load: other });
    expect(plain.submits).toBeGreaterThan(0);
    expect(loaded.submits).toBe(plain.submits);
    // The loaded weights landed after the recorded forward and backward and before the update:
    // identical to a run that flushes before loading (the old mechanism's order).
    const flushed = await trainingStep(gpu, { load: other, flushFirst: true });
    expect(flushed.submits).toBe(plain.submits + 1);
    for (const [name, { data }] of flushed.after) {
      expect(Array.from(loaded.after.get(name)!.data), name).toEqual(Array.from(data));
    }
    // And the load changed something (the step did not run on the original weights).
    const [name, { data }] = [...plain.after][0];
    expect(Array.from(loaded.after.get(name)!.data)).not.toEqual(Array.from(data));
  });
});
