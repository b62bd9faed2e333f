/**
 * Files of a generation: one PNG per image with a JSON sidecar holding everything needed to reproduce
 * it, and contact sheets (a grid: one row per prompt, labelled) for looking at many prompts at once,
 * e.g. generated images next to real ones.
 */
import { mkdirSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import sharp, { type OverlayOptions } from "sharp";
import type { PromptFields } from "../model/prompt.ts";
import { createPipeline, type GenerateOptions, type GenerationResult, Pipeline } from "./pipeline.ts";

function writeAtomic(path: string, data: string | Buffer): void {
  const temporary = `${path}.tmp-${process.pid}`;
  writeFileSync(temporary, data);
  renameSync(temporary, path);
}

/** image-0000.png + image-0000.json per image; returns the PNG paths. */
export function writeGeneratedImages(dir: string, result: GenerationResult, prefix = "image"): string[] {
  mkdirSync(dir, { recursive: true });
  const width = Math.max(4, String(result.images.length - 1).length);
  return result.images.map((image) => {
    const stem = join(dir, `${prefix}-${String(image.index).padStart(width, "0")}`);
    writeAtomic(`${stem}.png`, image.png);
    writeAtomic(`${stem}.json`, `${JSON.stringify(image.metadata, null, 2)}\n`);
    return `${stem}.png`;
  });
}

export interface ContactSheetRow {
  label: string;
  /** Square images, row-major intensities in [0, 1]. */
  images: { pixels: Float32Array; size: number }[];
}

function escapeXml(text: string): string {
  return text
    .replaceAll("&", "&amp;")
    .replaceAll("<", "&lt;")
    .replaceAll(">", "&gt;")
    .replaceAll('"', "&quot;");
}

/** Wraps a label into lines of at most `width` characters. */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(/\s+/)) {
    if (line.length > 0 && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line.length > 0 ? `${line} ${word}` : word;
    }
  }
  if (line.length > 0) lines.push(line);
  return lines.slice(0, 6);
}

/**
 * A grid PNG: each row a label (wrapped, on the left) then its images scaled (nearest neighbour) to
 * `cell` pixels. Rows may hold different numbers of images.
 */
export async function contactSheetPng(rows: readonly ContactSheetRow[], cell = 128): Promise<Buffer> {
  if (rows.length === 0) throw new Error("contact sheet: no rows");
  const labelWidth = 220;
  const gap = 4;
  const columns = Math.max(...rows.map((row) => row.images.length), 1);
  const width = labelWidth + columns * (cell + gap) + gap;
  const height = rows.length * (cell + gap) + gap;
  const composites: OverlayOptions[] = [];
  const labels: string[] = [];
  for (const [r, row] of rows.entries()) {
    const top = gap + r * (cell + gap);
    const lines = wrap(row.label, 30);
    lines.forEach((line, index) => {
      labels.push(
        `<text x="8" y="${top + 18 + index * 16}" font-size="12" font-family="DejaVu Sans, Arial, sans-serif">${escapeXml(line)}</text>`,
      );
    });
    for (const [c, image] of row.images.entries()) {
      const bytes = new Uint8Array(image.size * image.size);
      for (let p = 0; p < bytes.length; p++)
        bytes[p] = Math.round(Math.min(1, Math.max(0, image.pixels[p])) * 255);
      const tile = await sharp(bytes, { raw: { width: image.size, height: image.size, channels: 1 } })
        .resize(cell, cell, { kernel: "nearest" })
        .toColourspace("b-w")
        .png()
        .toBuffer();
      composites.push({ input: tile, left: labelWidth + gap + c * (cell + gap), top });
    }
  }
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}"><rect width="${width}" height="${height}" fill="white"/>${labels.join("")}</svg>`;
  composites.unshift({ input: Buffer.from(svg), left: 0, top: 0 });
  return sharp({ create: { width, height, channels: 3, background: "#ffffff" } })
    .composite(composites)
    .png()
    .toBuffer();
}

export interface ContactSheetOptions extends Partial<Omit<GenerateOptions, "prompt" | "n">> {
  /** One row per prompt. */
  prompts: readonly (string | PromptFields)[];
  /** Images per prompt (columns). */
  perPrompt: number;
  /** PNG path to write (atomically). */
  out: string;
  cell?: number;
  /** Extra rows (e.g. real images) appended below the generated ones. */
  extraRows?: readonly ContactSheetRow[];
}

/**
 * Generates `perPrompt` images for each prompt and writes them as one labelled grid PNG. Takes a
 * pipeline, or a model directory (loaded, used and released: one call from a model to a sheet).
 */
export async function writeContactSheet(
  source: Pipeline | string,
  options: ContactSheetOptions,
): Promise<{ path: string; result: GenerationResult }> {
  const { prompts, perPrompt, out, cell, extraRows, ...generate } = options;
  const pipeline = source instanceof Pipeline ? source : await createPipeline(source);
  let result: GenerationResult;
  try {
    result = await pipeline.generate({ ...generate, prompt: prompts, n: perPrompt });
  } finally {
    if (pipeline !== source) pipeline.dispose();
  }
  const rows: ContactSheetRow[] = [];
  for (let index = 0; index < prompts.length; index++) {
    const images = result.images.slice(index * perPrompt, (index + 1) * perPrompt);
    rows.push({ label: images[0].prompt, images });
  }
  const png = await contactSheetPng([...rows, ...(extraRows ?? [])], cell);
  writeAtomic(out, png);
  return { path: out, result };
}
