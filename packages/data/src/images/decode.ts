import { readFile } from "node:fs/promises";
import sharp from "sharp";
import { conciseErrorMessage } from "../errors.ts";

/** A grayscale image as Float32 intensities in [0, 1], row-major. */
export interface GrayImage {
  width: number;
  height: number;
  pixels: Float32Array;
}

export interface DecodedImage extends GrayImage {
  /** Bits per sample of the file: 16-bit PNGs keep their full precision. */
  bitDepth: 8 | 16;
}

/** Thrown for a file that is missing, truncated or not an image; the message starts with the path. */
export class ImageReadError extends Error {
  readonly path: string;
  readonly kind: "missing-image" | "unreadable-image";
  constructor(path: string, reason: string, kind: "missing-image" | "unreadable-image") {
    super(`${path}: ${kind === "missing-image" ? "image not found" : "cannot read image"}: ${reason}`);
    this.name = "ImageReadError";
    this.path = path;
    this.kind = kind;
  }
}

/**
 * Decodes a PNG or JPEG (8 or 16 bits, gray or color; color is converted to luminance, alpha dropped) to
 * [0, 1]. The whole image is decoded, so truncated files fail here rather than yield half an image:
 * sharp stops on decoder warnings such as libjpeg's "premature end of JPEG image".
 */
export async function decodeImage(path: string): Promise<DecodedImage> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (error) {
    const missing = (error as NodeJS.ErrnoException).code === "ENOENT";
    throw new ImageReadError(
      path,
      conciseErrorMessage(error),
      missing ? "missing-image" : "unreadable-image",
    );
  }
  try {
    const metadata = await sharp(bytes).metadata();
    const sixteenBit = metadata.depth === "ushort";
    const image = sharp(bytes, { failOn: "warning" }).removeAlpha();
    if (sixteenBit) {
      const { data, info } = await image
        .toColourspace("grey16")
        .raw({ depth: "ushort" })
        .toBuffer({ resolveWithObject: true });
      const samples = new Uint16Array(data.buffer, data.byteOffset, data.length / 2);
      return { width: info.width, height: info.height, bitDepth: 16, pixels: normalize(samples, 65535) };
    }
    const { data, info } = await image.toColourspace("b-w").raw().toBuffer({ resolveWithObject: true });
    return { width: info.width, height: info.height, bitDepth: 8, pixels: normalize(data, 255) };
  } catch (error) {
    throw new ImageReadError(path, decoderMessage(error), "unreadable-image");
  }
}

/**
 * libvips keeps one error buffer for all threads, so when several images decode at once the decoder's
 * own words ("premature end of JPEG image") can be lost and only sharp's generic failOn line is left.
 */
function decoderMessage(error: unknown): string {
  const message = conciseErrorMessage(error);
  if (/^Warning treated as error due to failOn setting$/.test(message)) {
    return "corrupt or truncated image data (the decoder warned and stopped)";
  }
  return message;
}

function normalize(samples: Uint8Array | Uint16Array, maximum: number): Float32Array {
  const pixels = new Float32Array(samples.length);
  for (let index = 0; index < samples.length; index++) pixels[index] = samples[index] / maximum;
  return pixels;
}
