import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { checkImages } from "../../packages/data/src/images/check.ts";
import { loadChexpert } from "../../packages/data/src/loaders/chexpert.ts";
import { loadFolder } from "../../packages/data/src/loaders/folder.ts";
import { loadMimic } from "../../packages/data/src/loaders/mimic.ts";
import { fixtures } from "./helpers.ts";

const badCsv = join(fixtures, "chexpert-bad/train.csv");
const mimic = join(fixtures, "mimic");

describe("checkImages", () => {
  const records = loadChexpert(badCsv, { onError: "skip" }).records;

  it('"exists" finds the missing image and reports it against its CSV row', async () => {
    const result = await checkImages(records, { level: "exists", onError: "skip" });
    expect(result.records.map((record) => record.patientId)).toEqual([
      "patient00010",
      "patient00011",
      "patient00018",
    ]);
    expect(result.skipped).toBe(1);
    expect(result.issues).toEqual([
      {
        kind: "missing-image",
        file: badCsv,
        row: 4,
        column: "Path",
        message: `image not found: ${join(fixtures, "chexpert-bad/train/patient00012/study1/view1_frontal.jpg")}`,
      },
    ]);
  });

  it('"decode" also finds the truncated JPEG, naming its path and the decoder error', async () => {
    const result = await checkImages(records, { level: "decode", onError: "skip" });
    expect(result.records.map((record) => record.patientId)).toEqual(["patient00010", "patient00018"]);
    expect(result.issues.map((issue) => [issue.kind, issue.row])).toEqual([
      ["unreadable-image", 3],
      ["missing-image", 4],
    ]);
    const truncated = join(fixtures, "chexpert-bad/train/patient00011/study1/view1_frontal.jpg");
    // The decoder's wording depends on timing (libvips shares one error buffer between threads).
    expect(result.issues[0].message).toMatch(
      new RegExp(`^${truncated}: cannot read image: (VipsJpeg|corrupt)`),
    );
  });

  it("fail mode throws the first bad image in dataset order", async () => {
    await expect(checkImages(records, { level: "decode", onError: "fail" })).rejects.toThrow(
      `${badCsv}:3: column "Path": ${join(fixtures, "chexpert-bad/train/patient00011/study1/view1_frontal.jpg")}: cannot read image`,
    );
    await expect(checkImages(records, { level: "exists", onError: "fail" })).rejects.toThrow(
      `${badCsv}:4: column "Path": image not found:`,
    );
  });

  it("MIMIC: a missing and a truncated JPEG, reported on their metadata rows", async () => {
    const loaded = loadMimic(mimic, { onError: "skip" });
    const result = await checkImages(loaded.records, { level: "decode", onError: "skip" });
    expect(result.issues.map((issue) => [issue.kind, issue.row, issue.column])).toEqual([
      ["missing-image", 7, "dicom_id"],
      ["unreadable-image", 8, "dicom_id"],
    ]);
    expect(result.records).toHaveLength(loaded.records.length - 2);
  });

  it("prompt folder: the truncated PNG is reported against its prompt file", async () => {
    const loaded = loadFolder(join(fixtures, "folder"), { onError: "skip" });
    const result = await checkImages(loaded.records, { level: "decode", onError: "skip" });
    expect(result.issues.map((issue) => [issue.kind, issue.file, issue.row])).toEqual([
      ["unreadable-image", join(fixtures, "folder/truncated.txt"), null],
    ]);
    expect(result.issues[0].message).toContain(join(fixtures, "folder/truncated.png"));
  });
});
