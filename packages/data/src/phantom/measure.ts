/**
 * Measuring the cardiothoracic ratio from pixels alone, the way a radiologist does on a PA film: the
 * widest transverse diameter of the cardiac silhouette over the widest inner diameter of the thorax.
 * It knows nothing about the phantom's parameters, so it can check both the phantom (does the drawn
 * heart match its label?) and, later, images a generator produced from a prompt.
 *
 * Method: smooth mostly vertically (averaging ribs and intercostal spaces into the lung's grey); find
 * each lung as the largest dark basin around a seed that stays enclosed by brighter tissue (bisecting
 * the threshold); then per row, the gap between the lungs' innermost pixels is mediastinum or heart and
 * the span between their outermost pixels is the thorax.
 */

export interface CardiothoracicMeasurement {
  ratio: number;
  /** Pixels between the innermost lung pixels, at the widest heart row. */
  heartWidth: number;
  /** Pixels between the outermost lung pixels, at the widest thorax row. */
  thoraxWidth: number;
  heartRow: number;
  thoraxRow: number;
  threshold: number;
  /** Per pixel: 1 right lung, 2 left lung, 0 elsewhere (the lungs as segmented for the measurement). */
  lungMask: Uint8Array;
}

/** Box filter along one axis via running sums; clamps at the borders. */
function boxFilter(source: Float32Array, size: number, radius: number, vertical: boolean): Float32Array {
  const target = new Float32Array(source.length);
  const width = 2 * radius + 1;
  const line = new Float32Array(size);
  const last = size - 1;
  for (let index = 0; index < size; index++) {
    for (let position = 0; position < size; position++) {
      line[position] = vertical ? source[position * size + index] : source[index * size + position];
    }
    let sum = 0;
    for (let k = -radius; k <= radius; k++) sum += line[k < 0 ? 0 : Math.min(k, last)];
    for (let position = 0; position < size; position++) {
      target[vertical ? position * size + index : index * size + position] = sum / width;
      const entering = position + radius + 1;
      const leaving = position - radius;
      sum += line[Math.min(entering, last)] - line[Math.max(leaving, 0)];
    }
  }
  return target;
}

/**
 * Flood fill of pixels darker than `threshold` from a seed. It leaks when it reaches the image edge or
 * pixels darker than `background` (air outside the body).
 */
function growRegion(
  image: Float32Array,
  size: number,
  seed: number,
  threshold: number,
  mask: Uint8Array,
  label: number,
  queue: Int32Array,
  background: number,
): { leaks: boolean; touchesOther: boolean } {
  let head = 0;
  let tail = 0;
  let leaks = false;
  let touchesOther = false;
  // Within this margin of the border a dark region is background or a collimator's edge, not lung.
  const margin = Math.max(1, Math.round(size * EDGE_MARGIN));
  mask[seed] = label;
  queue[tail++] = seed;
  while (head < tail) {
    const index = queue[head++];
    const row = Math.floor(index / size);
    const col = index - row * size;
    if (
      row < margin ||
      col < margin ||
      row >= size - margin ||
      col >= size - margin ||
      image[index] < background
    ) {
      leaks = true;
    }
    const neighbours = [index - 1, index + 1, index - size, index + size];
    for (let k = 0; k < 4; k++) {
      const next = neighbours[k];
      if ((k === 0 && col === 0) || (k === 1 && col === size - 1) || next < 0 || next >= image.length)
        continue;
      if (image[next] >= threshold) continue;
      if (mask[next] === label) continue;
      if (mask[next] !== 0) {
        touchesOther = true;
        continue;
      }
      mask[next] = label;
      queue[tail++] = next;
    }
  }
  return { leaks, touchesOther };
}

/** The darkest pixel of a rectangle (fractions of the image). */
function darkestIn(
  image: Float32Array,
  size: number,
  cols: [number, number],
  rows: [number, number],
): number {
  let best = -1;
  for (let row = Math.round(rows[0] * size); row < Math.round(rows[1] * size); row++) {
    for (let col = Math.round(cols[0] * size); col < Math.round(cols[1] * size); col++) {
      const index = row * size + col;
      if (best < 0 || image[index] < image[best]) best = index;
    }
  }
  return best;
}

/** Bisection steps for the lung threshold (each halves the interval). */
const THRESHOLD_BISECTIONS = 9;
/** Anything darker than this share of the lung seed's value is outside the body. */
const BACKGROUND_SHARE = 0.4;
/** Lungs never come this close (as a fraction of the image) to the image border. */
const EDGE_MARGIN = 0.035;
const RIGHT_LUNG = 1;
const LEFT_LUNG = 2;

/** Whether both lungs, grown at `threshold`, stay enclosed by brighter tissue and apart from each other. */
function lungsEnclosed(
  smooth: Float32Array,
  size: number,
  seeds: readonly [number, number],
  threshold: number,
  background: number,
  mask: Uint8Array,
  queue: Int32Array,
): boolean {
  mask.fill(0);
  const right = growRegion(smooth, size, seeds[0], threshold, mask, RIGHT_LUNG, queue, background);
  if (right.leaks || mask[seeds[1]] === RIGHT_LUNG) return false;
  const left = growRegion(smooth, size, seeds[1], threshold, mask, LEFT_LUNG, queue, background);
  return !left.leaks && !left.touchesOther;
}

function percentile(values: Float32Array, fraction: number): number {
  const sorted = Float32Array.from(values).sort();
  return sorted[Math.min(sorted.length - 1, Math.floor(fraction * sorted.length))];
}

export function measureCardiothoracicRatio(
  image: Float32Array,
  size: number,
): CardiothoracicMeasurement | null {
  if (image.length !== size * size)
    throw new Error(`image has ${image.length} pixels, expected ${size}x${size}`);
  const vertical = boxFilter(image, size, Math.max(1, Math.round(size * 0.03)), true);
  const smooth = boxFilter(vertical, size, Math.max(1, Math.round(size * 0.006)), false);
  // Seeds in each lung: the darkest pixel where a lung lies in every phantom and nearly every film.
  const seeds: [number, number] = [
    darkestIn(smooth, size, [0.25, 0.45], [0.3, 0.55]),
    darkestIn(smooth, size, [0.55, 0.75], [0.3, 0.55]),
  ];
  const central: number[] = [];
  for (let row = Math.round(size * 0.35); row < Math.round(size * 0.65); row++) {
    for (let col = Math.round(size * 0.45); col < Math.round(size * 0.55); col++)
      central.push(smooth[row * size + col]);
  }
  const heartLevel = percentile(Float32Array.from(central), 0.75);
  const seedLevel = Math.max(smooth[seeds[0]], smooth[seeds[1]]);
  const background = BACKGROUND_SHARE * Math.min(smooth[seeds[0]], smooth[seeds[1]]);
  const mask = new Uint8Array(size * size);
  const queue = new Int32Array(size * size);
  // The lungs are the largest dark basins still enclosed by brighter tissue: bisect for the highest
  // threshold at which neither lung leaks into the background nor into the other lung.
  let low = seedLevel + 1e-4;
  let high = heartLevel;
  if (!(low < high) || !lungsEnclosed(smooth, size, seeds, low, background, mask, queue)) return null;
  for (let step = 0; step < THRESHOLD_BISECTIONS; step++) {
    const middle = (low + high) / 2;
    if (lungsEnclosed(smooth, size, seeds, middle, background, mask, queue)) low = middle;
    else high = middle;
  }
  const threshold = low;
  lungsEnclosed(smooth, size, seeds, threshold, background, mask, queue);

  // Per row: the gap between the lungs' innermost pixels, and the span between their outermost pixels.
  const gaps = new Int32Array(size).fill(-1);
  let thoraxWidth = 0;
  let thoraxRow = -1;
  let firstRow = -1;
  let lastRow = -1;
  for (let row = 0; row < size; row++) {
    let rightOuter = -1;
    let rightInner = -1;
    let leftInner = -1;
    let leftOuter = -1;
    for (let col = 0; col < size; col++) {
      const label = mask[row * size + col];
      if (label === RIGHT_LUNG) {
        if (rightOuter < 0) rightOuter = col;
        rightInner = col;
      } else if (label === LEFT_LUNG) {
        if (leftInner < 0) leftInner = col;
        leftOuter = col;
      }
    }
    if (rightOuter < 0 || leftInner < 0) continue;
    gaps[row] = leftInner - rightInner - 1;
    if (firstRow < 0) firstRow = row;
    lastRow = row;
    const thorax = leftOuter - rightOuter + 1;
    if (thorax > thoraxWidth) {
      thoraxWidth = thorax;
      thoraxRow = row;
    }
  }
  if (firstRow < 0) return null;
  // The heart is measured below the narrowest mediastinum (above it, the gap is between the apices)
  // and above the diaphragm: once the gap has narrowed below the heart's widest row, a renewed
  // widening is the lung bases parting around the domes, not heart.
  let narrowestRow = firstRow;
  const upperEnd = firstRow + Math.floor((lastRow - firstRow) * 0.5);
  for (let row = firstRow; row <= upperEnd; row++) {
    if (gaps[row] >= 0 && gaps[row] < gaps[narrowestRow]) narrowestRow = row;
  }
  const tolerance = Math.max(1, Math.round(size * 0.015));
  const mediastinum = gaps[narrowestRow];
  const jump = Math.max(3, Math.round(size * 0.06));
  let heartWidth = 0;
  let heartRow = -1;
  let narrowing = false;
  let narrowestSince = 0;
  for (let row = narrowestRow; row <= lastRow; row++) {
    const gap = gaps[row];
    if (gap < 0) break;
    const heartStarted = heartWidth > mediastinum + 3 * tolerance;
    // A sudden widening below the heart's widest row is the lungs parting at the cardiophrenic angles.
    if (heartStarted && row > narrowestRow && gap - gaps[row - 1] > jump) break;
    if (!narrowing) {
      if (gap > heartWidth) {
        heartWidth = gap;
        heartRow = row;
      } else if (gap <= heartWidth - tolerance && heartStarted) {
        narrowing = true;
        narrowestSince = gap;
      }
    } else {
      if (gap > narrowestSince + tolerance) break;
      narrowestSince = Math.min(narrowestSince, gap);
    }
  }
  if (heartRow < 0 || thoraxRow < 0) return null;
  return {
    ratio: heartWidth / thoraxWidth,
    heartWidth,
    thoraxWidth,
    heartRow,
    thoraxRow,
    threshold,
    lungMask: mask,
  };
}
