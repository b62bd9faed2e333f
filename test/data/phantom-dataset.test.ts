import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { basename, dirname, join, relative } from "node:path";
import Papa from "papaparse";
import sharp from "sharp";
import { describe, expect, it } from "vitest";
import { quantize } from "../../packages/data/src/images/encode.ts";
import { loadChexpert } from "../../packages/data/src/loaders/chexpert.ts";
import { CSV_COLUMNS, generatePhantomDataset } from "../../packages/data/src/phantom/dataset.ts";
import { renderPhantom } from "../../packages/data/src/phantom/render/index.ts";
import type { PhantomParameters } from "../../packages/data/src/phantom/types.ts";
import { CHEXPERT_LABELS } from "../../packages/data/src/records.ts";
import { scratchFolder } from "./helpers.ts";

const scratch = scratchFolder("phantom-dataset");

/** sha256 of every file under a folder, by relative path. */
function hashTree(root: string): Map<string, string> {
  const hashes = new Map<string, string>();
  const walk = (folder: string) => {
    for (const name of readdirSync(folder).sort()) {
      const path = join(folder, name);
      if (statSync(path).isDirectory()) walk(path);
      else hashes.set(relative(root, path), createHash("sha256").update(readFileSync(path)).digest("hex"));
    }
  };
  walk(root);
  return hashes;
}

const base = { count: 36, size: 64 as const, institutions: ["northgate", "riverside", "highland"] };

describe("phantom dataset on disk", () => {
  // The same folder name under two parents: CSV paths start with the folder's name.
  const first = join(scratch, "a", "phantom");
  const second = join(scratch, "b", "phantom");
  const otherSeed = join(scratch, "c", "phantom");

  it("is byte-identical for the same seed and different for another seed", async () => {
    await generatePhantomDataset({ ...base, outDir: first, seed: 7 });
    await generatePhantomDataset({ ...base, outDir: second, seed: 7 });
    await generatePhantomDataset({ ...base, outDir: otherSeed, seed: 8 });
    const a = hashTree(first);
    const b = hashTree(second);
    const c = hashTree(otherSeed);
    const pngs = [...a.keys()].filter((file) => file.endsWith(".png"));
    expect(pngs.length).toBe(base.count);
    expect([...a.keys()]).toEqual([...b.keys()]);
    for (const [file, hash] of a) expect(b.get(file), file).toBe(hash);
    for (const file of ["train.csv", "valid.csv", "test.csv", "phantom.jsonl", "manifest.json"]) {
      expect(c.get(file), file).not.toBe(a.get(file));
    }
    const sharedImages = pngs.filter((file) => c.has(file));
    const differing = sharedImages.filter((file) => c.get(file) !== a.get(file));
    expect(differing.length).toBe(sharedImages.length);
  });

  it("writes CheXpert columns, paths rooted at the folder name, and one PNG per row", () => {
    let rows = 0;
    for (const split of ["train", "valid", "test"]) {
      const parsed = Papa.parse<string[]>(readFileSync(join(first, `${split}.csv`), "utf8").trim(), {
        skipEmptyLines: true,
      });
      const [header, ...data] = parsed.data;
      expect(header).toEqual([...CSV_COLUMNS]);
      for (const row of data) {
        rows++;
        expect(row[0]).toMatch(new RegExp(`^phantom/${split}/patient\\d{5}/study\\d+/view1_frontal\\.png$`));
        expect(existsSync(join(dirname(first), row[0]))).toBe(true);
        expect(["Female", "Male"]).toContain(row[1]);
        expect(row[3]).toBe("Frontal");
        expect(["AP", "PA"]).toContain(row[4]);
        for (let column = 5; column < 5 + CHEXPERT_LABELS.length; column++) {
          expect(["1.0", "0.0", "-1.0"]).toContain(row[column]);
        }
        expect(row[CSV_COLUMNS.indexOf("Prompt")]).toMatch(
          /^\d+ year old (WHITE|BLACK|ASIAN|HISPANIC) (female|male)\. /,
        );
      }
    }
    expect(rows).toBe(base.count);
    const manifest = JSON.parse(readFileSync(join(first, "manifest.json"), "utf8"));
    expect(manifest).toMatchObject({ seed: 7, count: base.count, size: 64, bitDepth: 8, images: base.count });
  });

  it("loads with the CheXpert loader, with race, institution and prompt, and no problems", () => {
    const result = loadChexpert(first);
    expect(result.issues).toEqual([]);
    expect(result.records.length).toBe(base.count);
    const lines = readFileSync(join(first, "phantom.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line));
    const byPath = new Map(lines.map((line) => [join(dirname(first), line.path), line]));
    for (const record of result.records) {
      const truth = byPath.get(record.imagePath);
      expect(truth, record.imagePath).toBeDefined();
      expect(record.race).toBe(truth.demographics.race);
      expect(record.institution).toBe(truth.institution);
      expect(record.prompt).toBe(truth.prompt);
      expect(record.split).toBe(truth.split);
      expect(record.labels).toEqual(truth.labels);
      expect(record.view).toBe(truth.view);
    }
  });

  it("keeps ground truth that re-renders each image exactly", async () => {
    const lines = readFileSync(join(first, "phantom.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line));
    expect(lines.length).toBe(base.count);
    for (const line of lines.slice(0, 6)) {
      const file = join(dirname(first), line.path);
      const metadata = await sharp(file).metadata();
      expect([metadata.channels, metadata.depth, metadata.width, metadata.height]).toEqual([
        1,
        "uchar",
        64,
        64,
      ]);
      const { data } = await sharp(file).toColourspace("b-w").raw().toBuffer({ resolveWithObject: true });
      const expected = quantize(renderPhantom(line.parameters as PhantomParameters, 64), 8);
      expect(Buffer.from(data).equals(Buffer.from(expected))).toBe(true);
      expect(line.cardiothoracicRatio).toBeGreaterThan(0.3);
      expect(line.drawnCardiothoracicRatio).toBe(line.parameters.anatomy.heart.halfWidth);
    }
  });

  it("writes 16-bit PNGs that decode to the rendered values", async () => {
    const folder = join(scratch, "sixteen", "phantom16");
    await generatePhantomDataset({ ...base, count: 5, outDir: folder, seed: 3, bitDepth: 16 });
    const line = JSON.parse(readFileSync(join(folder, "phantom.jsonl"), "utf8").split("\n")[0]);
    const file = join(dirname(folder), line.path);
    const metadata = await sharp(file).metadata();
    expect(metadata.depth).toBe("ushort");
    expect(metadata.channels).toBe(1);
    const { data } = await sharp(file)
      .toColourspace("grey16")
      .raw({ depth: "ushort" })
      .toBuffer({ resolveWithObject: true });
    const decoded = new Uint16Array(data.buffer, data.byteOffset, data.byteLength / 2);
    const expected = quantize(renderPhantom(line.parameters, 64), 16);
    expect(Array.from(decoded)).toEqual(Array.from(expected));
  });

  it("refuses to overwrite a non-empty folder unless told to, and leaves no staging folder behind", async () => {
    const folder = join(scratch, "occupied");
    mkdirSync(folder, { recursive: true });
    writeFileSync(join(folder, "keep.txt"), "mine");
    await expect(generatePhantomDataset({ ...base, count: 3, outDir: folder, seed: 1 })).rejects.toThrow(
      /exists and is not empty/,
    );
    expect(readFileSync(join(folder, "keep.txt"), "utf8")).toBe("mine");
    await generatePhantomDataset({ ...base, count: 3, outDir: folder, seed: 1, overwrite: true });
    expect(existsSync(join(folder, "keep.txt"))).toBe(false);
    expect(existsSync(join(folder, "train.csv"))).toBe(true);
    const leftovers = readdirSync(scratch).filter(
      (name) => name.includes(".partial-") || name.includes(".replaced-"),
    );
    expect(leftovers).toEqual([]);
  });

  it("rejects bad options with messages that name the option", async () => {
    const outDir = join(scratch, "bad");
    await expect(
      generatePhantomDataset({ ...base, outDir, seed: 1, institutions: ["nowhere"] }),
    ).rejects.toThrow(/unknown phantom institution "nowhere"/);
    await expect(generatePhantomDataset({ ...base, outDir, seed: 1, size: 100 as never })).rejects.toThrow(
      /size/,
    );
    await expect(generatePhantomDataset({ ...base, outDir, seed: -1 })).rejects.toThrow(/seed/);
    await expect(generatePhantomDataset({ ...base, outDir, seed: 1, count: 0 })).rejects.toThrow(/count/);
    await expect(
      generatePhantomDataset({
        ...base,
        outDir,
        seed: 1,
        splitFractions: { train: 0.5, valid: 0.1, test: 0.1 },
      }),
    ).rejects.toThrow(/sum to 1/);
    expect(existsSync(outDir)).toBe(false);
    expect(readdirSync(scratch).some((name) => name.startsWith(`${basename(outDir)}.partial-`))).toBe(false);
  });
});
