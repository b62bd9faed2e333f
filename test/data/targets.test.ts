import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { loadChexpert } from "../../packages/data/src/loaders/chexpert.ts";
import { frontalOnly } from "../../packages/data/src/pipeline/filters.ts";
import { labelTargets } from "../../packages/data/src/pipeline/targets.ts";
import { fixtures, makeRecord } from "./helpers.ts";

describe("uncertainty policies", () => {
  const records = [
    makeRecord({ labels: { Edema: 1, Cardiomegaly: 0, Pneumonia: -1, Atelectasis: null } }),
    makeRecord({ labels: { Edema: -1, Cardiomegaly: -1, Pneumonia: 0, Atelectasis: 1 } }),
  ];
  const labels = ["Edema", "Cardiomegaly", "Pneumonia", "Atelectasis"] as const;

  it("U-Ignore masks uncertain labels out of the loss", () => {
    const { target, mask } = labelTargets(records, { policy: "ignore", labels });
    expect(Array.from(target)).toEqual([1, 0, 0, 0, 0, 0, 0, 1]);
    expect(Array.from(mask)).toEqual([1, 1, 0, 1, 0, 0, 1, 1]);
  });

  it("U-Zeros counts them negative, U-Ones positive, both unmasked", () => {
    const zeros = labelTargets(records, { policy: "zeros", labels });
    expect(Array.from(zeros.target)).toEqual([1, 0, 0, 0, 0, 0, 0, 1]);
    expect(Array.from(zeros.mask)).toEqual(new Array(8).fill(1));
    const ones = labelTargets(records, { policy: "ones", labels });
    expect(Array.from(ones.target)).toEqual([1, 0, 1, 0, 1, 1, 0, 1]);
    expect(Array.from(ones.mask)).toEqual(new Array(8).fill(1));
  });

  it("blank is negative by default and can be masked instead", () => {
    expect(Array.from(labelTargets(records, { labels: ["Atelectasis"] }).mask)).toEqual([1, 1]);
    expect(Array.from(labelTargets(records, { labels: ["Atelectasis"], blank: "ignore" }).mask)).toEqual([
      0, 1,
    ]);
  });

  it("gives all 14 labels in CheXpert order by default", () => {
    const { target, labels: order } = labelTargets(records);
    expect(order[0]).toBe("No Finding");
    expect(order).toHaveLength(14);
    expect(target).toHaveLength(28);
  });
});

describe("frontalOnly", () => {
  it("drops the lateral view of the CheXpert fixture", () => {
    const records = loadChexpert(join(fixtures, "chexpert/CheXpert-v1.0-small")).records;
    const frontal = frontalOnly(records);
    expect(records).toHaveLength(7);
    expect(frontal.map((record) => record.view)).toEqual(["AP", "PA", "AP", "AP", "AP", "PA"]);
  });
});
