/**
 * Uploads inside a recorded batch: `Tensor.upload` and `tensor.write` record a staging copy in the
 * current command encoder instead of submitting, and queue order holds (the copy lands after the
 * dispatches recorded before it, even when the pool hands the new tensor a buffer those still read).
 */
import { add, defaultGpu, relu, scale, Tensor } from "@cxr/kernels";
import { describe, expect, it } from "vitest";

describe("uploads in a recorded batch", () => {
  it("an upload mid-batch does not submit, and later dispatches see its data", async () => {
    const gpu = await defaultGpu();
    await gpu.sync();
    const before = gpu.submitCount;
    const x = Tensor.upload(gpu, [1, -2, 3, -4], [4]);
    const y = relu(x); // recorded
    const z = Tensor.upload(gpu, [10, 20, 30, 40], [4]); // mid-batch
    const w = add(y, z);
    expect(gpu.submitCount).toBe(before);
    expect(Array.from(await w.download())).toEqual([11, 20, 33, 40]);
    expect(gpu.submitCount).toBe(before + 1); // the download's one submit
    for (const tensor of [x, y, z, w]) tensor.release();
  });

  it("an upload into a reused buffer lands after the recorded dispatches that read the old contents", async () => {
    const gpu = await defaultGpu();
    await gpu.sync();
    const before = gpu.submitCount;
    const x = Tensor.upload(gpu, [1, 2, 3, 4, 5, 6, 7], [7]);
    const buffer = x.buffer;
    const doubled = scale(x, 2); // reads x's buffer, recorded only
    x.release(); // back to the pool while the dispatch that reads it is still unsubmitted
    const reused = Tensor.upload(gpu, [-1, -1, -1, -1, -1, -1, -1], [7]);
    expect(reused.buffer).toBe(buffer); // the pool handed the same buffer out again
    const sum = add(doubled, reused);
    expect(gpu.submitCount).toBe(before);
    expect(Array.from(await sum.download())).toEqual([1, 3, 5, 7, 9, 11, 13]);
    expect(Array.from(await doubled.download())).toEqual([2, 4, 6, 8, 10, 12, 14]);
    expect(Array.from(await reused.download())).toEqual([-1, -1, -1, -1, -1, -1, -1]);
    for (const tensor of [doubled, reused, sum]) tensor.release();
  });

  it("write replaces contents in place, in queue order, for f32, u32 and f16", async () => {
    const gpu = await defaultGpu();
    await gpu.sync();
    const before = gpu.submitCount;
    const x = Tensor.upload(gpu, [1, 2, 3], [3]);
    const first = scale(x, 1); // reads the first contents
    x.write([4, 5, 6]);
    const second = scale(x, 1);
    const ids = Tensor.upload(gpu, [1, 2, 3], [3], "u32");
    ids.write([7, 8, 4000000]);
    expect(gpu.submitCount).toBe(before);
    expect(Array.from(await first.download())).toEqual([1, 2, 3]);
    expect(Array.from(await second.download())).toEqual([4, 5, 6]);
    expect(Array.from(await ids.download())).toEqual([7, 8, 4000000]);
    if (gpu.features.has("shader-f16")) {
      const half = Tensor.upload(gpu, [0, 0, 0], [3], "f16");
      half.write([1.5, -2, 65504]);
      expect(Array.from(await half.download())).toEqual([1.5, -2, 65504]);
      half.release();
    }
    for (const tensor of [x, first, second, ids]) tensor.release();
  });

  it("write refuses the wrong length and bad u32 values, naming the tensor's shape", async () => {
    const gpu = await defaultGpu();
    const x = Tensor.upload(gpu, [1, 2, 3], [3]);
    expect(() => x.write([1, 2])).toThrow(/write: data has 2 values but the tensor holds 3 \(shape: \[3\]\)/);
    const ids = Tensor.upload(gpu, [1, 2], [2], "u32");
    expect(() => ids.write([1, -1])).toThrow(/write: u32 tensor given -1 at index 1/);
    expect(Array.from(await ids.download())).toEqual([1, 2]);
    for (const tensor of [x, ids]) tensor.release();
  });
});
