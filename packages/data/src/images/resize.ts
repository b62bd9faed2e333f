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
  const pixels = resizeInsideCanvas(
    image,
    { width: image.width, height: image.height, left: 0, top: 0 },
    width,
    height,
  );
  return { width, height, pixels };
}

/** Where an image sits on a larger black canvas. */
interface Canvas {
  width: number;
  height: number;
  left: number;
  top: number;
}

/**
 * Resizes the canvas (the image plus black margins) to width x height without building the canvas:
 * margin pixels are zero, so they only count in the weight normalisation, never in the sums. The
 * result is the same as padding first, at a fraction of the memory for a 3000-pixel radiograph.
 */
function resizeInsideCanvas(image: GrayImage, canvas: Canvas, width: number, height: number): Float32Array {
  const horizontal = axisWeights(canvas.width, width);
  const vertical = axisWeights(canvas.height, height);
  const source = image.pixels;
  const sourceWidth = image.width;
  const sourceHeight = image.height;

  // Pass 1: each image row to `width` samples. The tap range of each output column is clipped to the image.
  const rowsResized = new Float32Array(sourceHeight * width);
  const { starts: columnStarts, weights: columnWeights, taps: columnTaps } = horizontal;
  const columnOffsets = new Int32Array(width);
  const firstTaps = new Int32Array(width);
  const lastTaps = new Int32Array(width);
  for (let x = 0; x < width; x++) {
    columnOffsets[x] = columnStarts[x] - canvas.left;
    firstTaps[x] = Math.max(0, -columnOffsets[x]);
    lastTaps[x] = Math.min(columnTaps, sourceWidth - columnOffsets[x]);
  }
  for (let y = 0; y < sourceHeight; y++) {
    const rowOffset = y * sourceWidth;
    const outputOffset = y * width;
    for (let x = 0; x < width; x++) {
      const offset = rowOffset + columnOffsets[x];
      const weightOffset = x * columnTaps;
      let sum = 0;
      for (let tap = firstTaps[x]; tap < lastTaps[x]; tap++)
        sum += columnWeights[weightOffset + tap] * source[offset + tap];
      rowsResized[outputOffset + x] = sum;
    }
  }

  // Pass 2: columns to `height` samples; canvas rows outside the image add nothing.
  const pixels = new Float32Array(height * width);
  const { starts: rowStarts, weights: rowWeights, taps: rowTaps } = vertical;
  for (let y = 0; y < height; y++) {
    const start = rowStarts[y] - canvas.top;
    const firstTap = Math.max(0, -start);
    const lastTap = Math.min(rowTaps, sourceHeight - start);
    const outputOffset = y * width;
    for (let tap = firstTap; tap < lastTap; tap++) {
      const weight = rowWeights[y * rowTaps + tap];
      if (weight === 0) continue;
      const sourceOffset = (start + tap) * width;
      for (let x = 0; x < width; x++) pixels[outputOffset + x] += weight * rowsResized[sourceOffset + x];
    }
  }
  return pixels;
}

/** [0, 1] -> [-1, 1] in place, the range the diffusion model and classifier are trained on. */
export function toModelRange(pixels: Float32Array): Float32Array {
  for (let index = 0; index < pixels.length; index++) pixels[index] = pixels[index] * 2 - 1;
  return pixels;
}

/**
 * Pad, resize to size x size and scale to [-1, 1]: the model input of one radiograph. Equal to
 * resizeBilinear(padToSquare(image), size, size) scaled, without materialising the padded square.
 */
export function toModelInput(image: GrayImage, size: number): Float32Array {
  const side = Math.max(image.width, image.height);
  if (side === size && image.width === image.height) return toModelRange(image.pixels.slice());
  const canvas = {
    width: side,
    height: side,
    left: Math.floor((side - image.width) / 2),
    top: Math.floor((side - image.height) / 2),
  };
  return toModelRange(resizeInsideCanvas(image, canvas, size, size));
}
