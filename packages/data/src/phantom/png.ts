/**
 * Grayscale PNG encoding of rendered phantoms at 8 or 16 bits (sharp; see PLATFORM.md: typed arrays as
 * raw input, `grey16` for 16-bit, `b-w` for 8-bit). sharp writes no timestamps, so equal pixels give
 * byte-identical files.
 */
import sharp from "sharp";

export const BIT_DEPTHS = [8, 16] as const;
export type BitDepth = (typeof BIT_DEPTHS)[number];

/** Rounds display values in [0, 1] to the integer range of the bit depth. */
export function quantize(pixels: Float32Array, bitDepth: BitDepth): Uint8Array | Uint16Array {
  const maximum = bitDepth === 8 ? 255 : 65535;
  const output = bitDepth === 8 ? new Uint8Array(pixels.length) : new Uint16Array(pixels.length);
  for (let i = 0; i < pixels.length; i++) {
    const value = pixels[i];
    output[i] = Math.round((value <= 0 ? 0 : Math.min(value, 1)) * maximum);
  }
  return output;
}

export async function encodeGrayscalePng(
  pixels: Float32Array,
  size: number,
  bitDepth: BitDepth,
): Promise<Buffer> {
  if (pixels.length !== size * size)
    throw new Error(`image has ${pixels.length} pixels, expected ${size}x${size}`);
  const raw = { width: size, height: size, channels: 1 as const };
  return sharp(quantize(pixels, bitDepth), { raw })
    .toColourspace(bitDepth === 16 ? "grey16" : "b-w")
    .png()
    .toBuffer();
}
