import type { GrayImage } from "./decode.ts";

/**
 * The RoentGen-v2 image transform, written out so its numbers can be checked by hand:
 * zero-pad to a centred square, bilinear resize, then scale [0, 1] to [-1, 1].
 */

/** Centres the image on a black square whose side is the longer edge; an odd margin goes right/bottom. */
export function padToSquare(image: GrayImage): GrayImage {
  const side = Math.max(image.width, image.height);
  if (image.width === side && image.height === side) return image;
  const pixels = new Float32Array(side * side);
  const left = Math.floor((side - image.width) / 2);
  const top = Math.floor((side - image.height) / 2);
  for (let y = 0; y < image.height; y++) {
    const sourceRow = image.pixels.subarray(y * image.width, (y + 1) * image.width);
    pixels.set(sourceRow, (top + y) * side + left);
  }
  return { width: side, height: side, pixels };
}

interface AxisWeights {
  /** First source index that output index i reads. */
  starts: Int32Array;
  /** Weights per output index, `taps` each, zero-padded. */
  weights: Float32Array;
  taps: number;
}

/**
 * Triangle-filter weights along one axis, as PIL's and torchvision's (antialias=True) bilinear resize:
 * pixel centres at i + 0.5; when upscaling this is plain bilinear interpolation (edges clamped), when
 * downscaling the triangle widens by the scale factor so every source pixel contributes (no aliasing).
 * Weights are normalised over the taps that fall inside the image.
 */
function axisWeights(sourceSize: number, targetSize: number): AxisWeights {
  const scale = sourceSize / targetSize;
  const filterScale = Math.max(scale, 1);
  const support = filterScale;
  const taps = Math.ceil(support) * 2 + 1;
  const starts = new Int32Array(targetSize);
  const weights = new Float32Array(targetSize * taps);
  for (let target = 0; target < targetSize; target++) {
    const center = (target + 0.5) * scale;
    const first = Math.max(0, Math.trunc(center - support + 0.5));
    const last = Math.min(sourceSize, Math.trunc(center + support + 0.5));
    starts[target] = first;
    let total = 0;
    for (let source = first; source < last; source++) {
      const distance = Math.abs((source + 0.5 - center) / filterScale);
      const weight = Math.max(0, 1 - distance);
      weights[target * taps + (source - first)] = weight;
      total += weight;
    }
    for (let tap = 0; tap < last - first; tap++) weights[target * taps + tap] /= total;
  }
  return { starts, weights, taps };
}

/** Separable bilinear resize: rows first, then columns. */
export function resizeBilinear(image: GrayImage, width: number, height: number): GrayImage {
  if (image.width === width && image.height === height) return image;
  const horizontal = axisWeights(image.width, width);
  const vertical = axisWeights(image.height, height);
  const rowsResized = new Float32Array(image.height * width);
  for (let y = 0; y < image.height; y++) {
    const rowOffset = y * image.width;
    for (let x = 0; x < width; x++) {
      const start = horizontal.starts[x];
      const taps = Math.min(horizontal.taps, image.width - start);
      let sum = 0;
      for (let tap = 0; tap < taps; tap++) {
        sum += horizontal.weights[x * horizontal.taps + tap] * image.pixels[rowOffset + start + tap];
      }
      rowsResized[y * width + x] = sum;
    }
  }
  const pixels = new Float32Array(height * width);
  for (let y = 0; y < height; y++) {
    const start = vertical.starts[y];
    const taps = Math.min(vertical.taps, image.height - start);
    for (let tap = 0; tap < taps; tap++) {
      const weight = vertical.weights[y * vertical.taps + tap];
      if (weight === 0) continue;
      const sourceOffset = (start + tap) * width;
      for (let x = 0; x < width; x++) pixels[y * width + x] += weight * rowsResized[sourceOffset + x];
    }
  }
  return { width, height, pixels };
}

/** [0, 1] -> [-1, 1] in place, the range the diffusion model and classifier are trained on. */
export function toModelRange(pixels: Float32Array): Float32Array {
  for (let index = 0; index < pixels.length; index++) pixels[index] = pixels[index] * 2 - 1;
  return pixels;
}

/** Pad, resize to size x size and scale to [-1, 1]: the model input of one radiograph. */
export function toModelInput(image: GrayImage, size: number): Float32Array {
  const square = resizeBilinear(padToSquare(image), size, size);
  // Copy when nothing was resized, so the caller's image is never scaled in place.
  const pixels = square.pixels === image.pixels ? square.pixels.slice() : square.pixels;
  return toModelRange(pixels);
}
