import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { DataInputError } from "../../packages/data/src/errors.ts";
import { writeGrayPng } from "../../packages/data/src/images/encode.ts";
import { batches, type HostBatch } from "../../packages/data/src/pipeline/batches.ts";
import { BalancedSampler } from "../../packages/data/src/pipeline/sampler.ts";
import { shuffledOrder } from "../../packages/data/src/random.ts";
import type { CxrRecord } from "../../packages/data/src/records.ts";
import { makeRecord, scratchFolder } from "./helpers.ts";

const scratch = scratchFolder("batches");
const IMAGE_SIZE = 8;
const AREA = IMAGE_SIZE * IMAGE_SIZE;

/** Record i is a 4x6 image of constant intensity (i + 1) / 16, so every pixel tells which record it is. */
function intensity(index: number): number {
  return (index + 1) / 16;
}

const records: CxrRecord[] = Array.from({ length: 10 }, (_, index) =>
  makeRecord({
    patientId: `patient${index}`,
    imagePath: join(scratch, `image${index}.png`),
    sex: index % 2 === 0 ? "female" : "male",
    labels: { Edema: index % 3 === 0 ? -1 : 1 },
    source: { file: "fixture.csv", row: index + 2, imageColumn: "Path" },
  }),
);

beforeAll(async () => {
  for (const [index, record] of records.entries()) {
    await writeGrayPng(
      record.imagePath,
      { width: 4, height: 6, pixels: new Float32Array(24).fill(intensity(index)) },
      16,
    );
  }
});

/** Records whose image at `badIndex` is a corrupt file. */
function withCorruptImage(badIndex: number): CxrRecord[] {
  const corrupt = join(scratch, `corrupt${badIndex}.png`);
  writeFileSync(corrupt, "not a png");
  return records.map((record, index) => (index === badIndex ? { ...record, imagePath: corrupt } : record));
}

async function collect<T>(iterator: AsyncIterable<T>): Promise<T[]> {
  const items: T[] = [];
  for await (const item of iterator) items.push(item);
  return items;
}

/** The record each image of a batch came from, read back from its centre pixel. */
function recordIndices(batch: HostBatch): number[] {
  const centre = (IMAGE_SIZE / 2) * IMAGE_SIZE + IMAGE_SIZE / 2;
  return Array.from({ length: batch.size }, (_, image) => {
    const value = (batch.images[image * AREA + centre] + 1) / 2;
    return Math.round(value * 16) - 1;
  });
}

const sleep = (milliseconds: number) => new Promise((resolve) => setTimeout(resolve, milliseconds));

describe("batches", () => {
  it("yields N x 1 x S x S images in [-1, 1] with targets, mask and records, in order", async () => {
    const all = await collect(batches(records, { batchSize: 4, imageSize: IMAGE_SIZE }));
    expect(all.map((batch) => [batch.index, batch.size, batch.images.length, batch.labels.length])).toEqual([
      [0, 4, 4 * AREA, 4 * 14],
      [1, 4, 4 * AREA, 4 * 14],
      [2, 2, 2 * AREA, 2 * 14],
    ]);
    expect(all.flatMap(recordIndices)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(all[0].records).toEqual(records.slice(0, 4));
    // The 4x6 image is padded left and right with black (-1 after scaling) before it is resized.
    const first = all[0].images;
    expect(first[0]).toBeCloseTo(-1, 5);
    expect(first[(IMAGE_SIZE / 2) * IMAGE_SIZE + IMAGE_SIZE / 2]).toBeCloseTo(intensity(0) * 2 - 1, 5);
    // Edema is column 5; record 0 is uncertain (masked under U-Ignore), record 1 positive.
    expect([all[0].labels[5], all[0].mask[5], all[0].labels[14 + 5], all[0].mask[14 + 5]]).toEqual([
      0, 0, 1, 1,
    ]);
    expect(all[0].device).toBeUndefined();
  });

  it("follows a given order, drops a short last batch on request, and applies the uncertainty policy", async () => {
    const order = shuffledOrder(records.length, 5);
    const all = await collect(
      batches(records, {
        batchSize: 4,
        imageSize: IMAGE_SIZE,
        order,
        dropLast: true,
        targets: { policy: "ones" },
      }),
    );
    expect(all.map((batch) => batch.size)).toEqual([4, 4]);
    expect(all.flatMap(recordIndices)).toEqual(order.slice(0, 8));
    expect(
      all.flatMap((batch) => Array.from({ length: batch.size }, (_, image) => batch.labels[image * 14 + 5])),
    ).toEqual(new Array(8).fill(1));
  });

  it("takes its order from an endless balanced sampler until the caller stops", async () => {
    const sampler = new BalancedSampler(records, { attributes: ["sex"], label: "Edema", seed: 1 });
    let count = 0;
    for await (const batch of batches(records, { batchSize: 3, imageSize: IMAGE_SIZE, order: sampler })) {
      expect(batch.size).toBe(3);
      if (++count === 5) break;
    }
    expect(count).toBe(5);
  });

  it("skip mode leaves an unreadable image out of its batch and reports it with file, row and path", async () => {
    const withBad = withCorruptImage(5);
    const all = await collect(batches(withBad, { batchSize: 4, imageSize: IMAGE_SIZE, onError: "skip" }));
    expect(all.map((batch) => batch.size)).toEqual([4, 3, 2]);
    expect(all[1].records.map((record) => record.patientId)).toEqual(["patient4", "patient6", "patient7"]);
    expect(all[1].issues).toEqual([
      {
        kind: "unreadable-image",
        file: "fixture.csv",
        row: 7,
        column: "Path",
        message: `${withBad[5].imagePath}: cannot read image: Input buffer contains unsupported image format`,
      },
    ]);
  });

  it("fail mode throws when the batch holding the unreadable image is reached", async () => {
    const withBad = withCorruptImage(5);
    const seen: number[] = [];
    const run = async () => {
      for await (const batch of batches(withBad, { batchSize: 4, imageSize: IMAGE_SIZE, onError: "fail" })) {
        seen.push(batch.index);
      }
    };
    await expect(run()).rejects.toThrow(DataInputError);
    await expect(run()).rejects.toThrow(
      `fixture.csv:7: column "Path": ${withBad[5].imagePath}: cannot read image`,
    );
    expect(seen).toEqual([0, 0]);
  });

  it("a caller that stops early never meets the failure of a batch prepared ahead", async () => {
    const withBad = withCorruptImage(9);
    for await (const batch of batches(withBad, { batchSize: 4, imageSize: IMAGE_SIZE, prefetch: 3 })) {
      expect(batch.index).toBe(0);
      break;
    }
    // Give the abandoned batch time to fail; an unhandled rejection would fail this test file.
    await sleep(100);
  });

  it("rejects nonsense sizes", async () => {
    await expect(collect(batches(records, { batchSize: 0, imageSize: 8 }))).rejects.toThrow(
      "batchSize must be a positive integer, got 0",
    );
    await expect(collect(batches(records, { batchSize: 2, imageSize: 8, order: [0, 10] }))).rejects.toThrow(
      "batch order index 10 is outside 0..9",
    );
  });
});

describe("prefetch and upload", () => {
  /** Runs a fake training loop that spends `stepMs` on each batch and logs when each batch is uploaded. */
  async function trainingLog(prefetch: number, stepMs: number): Promise<string[]> {
    const events: string[] = [];
    const upload = async (batch: HostBatch) => {
      events.push(`upload ${batch.index}`);
      return { onDevice: batch.index };
    };
    for await (const batch of batches(records, { batchSize: 4, imageSize: IMAGE_SIZE, prefetch, upload })) {
      expect(batch.device).toEqual({ onDevice: batch.index });
      events.push(`step ${batch.index} start`);
      await sleep(stepMs);
      events.push(`step ${batch.index} end`);
    }
    return events;
  }

  it("prepares and uploads the next batch while the caller is still working on the current one", async () => {
    const events = await trainingLog(1, 300);
    expect(events.indexOf("upload 1")).toBeLessThan(events.indexOf("step 0 end"));
    expect(events.indexOf("upload 2")).toBeLessThan(events.indexOf("step 1 end"));
  });

  it("with prefetch 0, nothing is prepared until the caller asks", async () => {
    const events = await trainingLog(0, 50);
    expect(events).toEqual([
      "upload 0",
      "step 0 start",
      "step 0 end",
      "upload 1",
      "step 1 start",
      "step 1 end",
      "upload 2",
      "step 2 start",
      "step 2 end",
    ]);
  });
});
