import { describe, expect, it } from "vitest";
import { BalancedSampler, demographicGroup } from "../../packages/data/src/pipeline/sampler.ts";
import type { CxrRecord } from "../../packages/data/src/records.ts";
import { makeRecord } from "./helpers.ts";

/** A skewed dataset: many healthy white men, few black women, a few records without race. */
function skewedRecords(): CxrRecord[] {
  const records: CxrRecord[] = [];
  const add = (count: number, overrides: Partial<CxrRecord>, noFinding: 1 | 0 | -1) => {
    for (let index = 0; index < count; index++) {
      records.push(makeRecord({ ...overrides, labels: { "No Finding": noFinding } }));
    }
  };
  add(300, { sex: "male", race: "WHITE" }, 1);
  add(100, { sex: "male", race: "WHITE" }, 0);
  add(20, { sex: "female", race: "BLACK" }, 1);
  add(2, { sex: "female", race: "BLACK" }, 0);
  add(5, { sex: "female", race: null }, 0);
  return records;
}

describe("BalancedSampler", () => {
  const records = skewedRecords();
  const sampler = new BalancedSampler(records, { attributes: ["sex", "race"], label: "No Finding", seed: 3 });

  it("builds one cell per non-empty group x label state and excludes records without a group", () => {
    expect(sampler.cells.map((cell) => [cell.group, cell.label, cell.members.length])).toEqual([
      ["female|BLACK", "negative", 2],
      ["female|BLACK", "positive", 20],
      ["male|WHITE", "negative", 100],
      ["male|WHITE", "positive", 300],
    ]);
    expect(sampler.excluded).toBe(5);
  });

  it("draws every cell equally often, and every record of a cell equally often", () => {
    const draws = sampler.take(40_000);
    const cellOf = new Map<number, string>();
    for (const cell of sampler.cells)
      for (const member of cell.members) cellOf.set(member, `${cell.group} ${cell.label}`);
    const perCell = new Map<string, number>();
    const perRecord = new Map<number, number>();
    for (const index of draws) {
      const cell = cellOf.get(index) ?? "outside every cell";
      perCell.set(cell, (perCell.get(cell) ?? 0) + 1);
      perRecord.set(index, (perRecord.get(index) ?? 0) + 1);
    }
    expect(perCell.size).toBe(4);
    // 10,000 expected per cell; the binomial standard deviation is about 87.
    for (const count of perCell.values()) expect(Math.abs(count - 10_000)).toBeLessThan(450);
    // The two black women without "No Finding" share their cell: about 5,000 draws each.
    for (const member of sampler.cells[0].members)
      expect(Math.abs(perRecord.get(member)! - 5_000)).toBeLessThan(350);
  });

  it("is reproducible from its seed", () => {
    const again = new BalancedSampler(records, { attributes: ["sex", "race"], seed: 3 });
    const other = new BalancedSampler(records, { attributes: ["sex", "race"], seed: 4 });
    const reference = new BalancedSampler(records, { attributes: ["sex", "race"], seed: 3 }).take(50);
    expect(again.take(50)).toEqual(reference);
    expect(other.take(50)).not.toEqual(reference);
  });

  it("puts uncertain labels in their own cell under U-Ignore and folds them in under U-Ones", () => {
    const withUncertain = [
      ...records,
      makeRecord({ sex: "male", race: "WHITE", labels: { "No Finding": -1 } }),
    ];
    const ignore = new BalancedSampler(withUncertain, { attributes: ["sex", "race"], policy: "ignore" });
    expect(ignore.cells.map((cell) => `${cell.group} ${cell.label}`)).toContain("male|WHITE masked");
    const ones = new BalancedSampler(withUncertain, { attributes: ["sex", "race"], policy: "ones" });
    expect(
      ones.cells.find((cell) => cell.group === "male|WHITE" && cell.label === "positive")!.members,
    ).toHaveLength(301);
  });

  it("refuses a dataset where no record has the attributes", () => {
    expect(() => new BalancedSampler([makeRecord({ race: null })], { attributes: ["race"] })).toThrow(
      "balanced sampler: no record has all of race (1 records)",
    );
  });
});

describe("demographicGroup", () => {
  it("joins the attributes, with the age bin computed from the age", () => {
    expect(
      demographicGroup(makeRecord({ sex: "female", age: 83, race: "ASIAN" }), ["sex", "ageBin", "race"]),
    ).toBe("female|80+|ASIAN");
    expect(demographicGroup(makeRecord({ institution: null }), ["institution"])).toBeNull();
  });
});
