import { rename, writeFile } from "node:fs/promises";
import sharp from "sharp";
import type { GrayImage } from "./decode.ts";

/**
 * Encodes [0, 1] intensities as an 8- or 16-bit grayscale PNG (values are clamped, then rounded to the
 * nearest level, so decodeImage gives back exactly level / (2^bits - 1)).
 */
export async function encodeGrayPng(image: GrayImage, bitDepth: 8 | 16): Promise<Buffer> {
  const { width, height, pixels } = image;
  if (pixels.length !== width * height) {
    throw new Error(`image has ${pixels.length} pixels, expected ${width}x${height}=${width * height}`);
  }
  const maximum = bitDepth === 16 ? 65535 : 255;
  const samples = bitDepth === 16 ? new Uint16Array(pixels.length) : new Uint8Array(pixels.length);
  for (let index = 0; index < pixels.length; index++) {
    samples[index] = Math.round(Math.min(1, Math.max(0, pixels[index])) * maximum);
  }
  // sharp takes a typed array as raw input and infers 16-bit from Uint16Array (PLATFORM.md).
  return sharp(samples, { raw: { width, height, channels: 1 } })
    .toColourspace(bitDepth === 16 ? "grey16" : "b-w")
    .png()
    .toBuffer();
}

/** Writes through a temporary file and a rename, so a crash never leaves half a PNG behind. */
export async function writeGrayPng(path: string, image: GrayImage, bitDepth: 8 | 16): Promise<void> {
  const temporary = `${path}.tmp-${process.pid}`;
  await writeFile(temporary, await encodeGrayPng(image, bitDepth));
  await rename(temporary, path);
}
