import { rename, writeFile } from "node:fs/promises";
import sharp from "sharp";
import type { GrayImage } from "./decode.ts";

export const BIT_DEPTHS = [8, 16] as const;
export type BitDepth = (typeof BIT_DEPTHS)[number];

/**
 * Rounds [0, 1] intensities to the integer levels of the bit depth (clamped first; NaN gives 0), so
 * decodeImage gives back exactly level / (2^bits - 1).
 */
export function quantize(pixels: Float32Array, bitDepth: BitDepth): Uint8Array | Uint16Array {
  const maximum = bitDepth === 16 ? 65535 : 255;
  const samples = bitDepth === 16 ? new Uint16Array(pixels.length) : new Uint8Array(pixels.length);
  for (let index = 0; index < pixels.length; index++) {
    samples[index] = Math.round(Math.min(1, Math.max(0, pixels[index])) * maximum);
  }
  return samples;
}

/**
 * The one grayscale PNG encoder (phantom, pipeline, outputs): [0, 1] intensities as an 8- or 16-bit
 * PNG. sharp writes no timestamps, so equal pixels give byte-identical files.
 */
export async function encodeGrayPng(image: GrayImage, bitDepth: BitDepth): Promise<Buffer> {
  const { width, height, pixels } = image;
  if (pixels.length !== width * height) {
    throw new Error(`image has ${pixels.length} pixels, expected ${width}x${height}=${width * height}`);
  }
  // sharp takes a typed array as raw input and infers 16-bit from Uint16Array (PLATFORM.md).
  return sharp(quantize(pixels, bitDepth), { raw: { width, height, channels: 1 } })
    .toColourspace(bitDepth === 16 ? "grey16" : "b-w")
    .png()
    .toBuffer();
}

/** Writes through a temporary file and a rename, so a crash never leaves half a PNG behind. */
export async function writeGrayPng(path: string, image: GrayImage, bitDepth: BitDepth): Promise<void> {
  const temporary = `${path}.tmp-${process.pid}`;
  await writeFile(temporary, await encodeGrayPng(image, bitDepth));
  await rename(temporary, path);
}
