/**
 * Exact AUROC and confusion counts for every subgroup, from weighted passes over a label's rows
 * sorted by predicted probability.
 *
 * AUROC is the Mann-Whitney statistic: the share of (positive, negative) pairs in which the positive
 * scores higher, ties counted as half. With patient weights w (bootstrap multiplicities) every pair
 * counts w_pos * w_neg, which is exactly the AUROC of the data set with each row repeated w times.
 * Sorting happens once per label; each bootstrap round then only re-weights the same order, so a
 * round costs one linear pass per label and dimension.
 *
 * Within a run of equal probabilities the negatives are placed first, so "negatives seen so far" at a
 * positive counts the negatives strictly below it plus all tied ones; the tied pairs are then
 * counted half by subtracting half of (run positives x run negatives) for each run holding both
 * classes. That keeps the hot loop to three running sums with no per-row branch.
 */

/** Truth codes stored per row and label. Uncertain and blank rows are left out of that label. */
export const TRUTH_POSITIVE = 1;
export const TRUTH_NEGATIVE = 0;
export const TRUTH_UNCERTAIN = -1;
export const TRUTH_BLANK = -2;

/** One label's rows with a known truth value, arranged for weighted passes. */
export interface RankedLabel {
  /** Rows with truth 0 or 1. */
  readonly count: number;
  /** Row index (into the prediction table) of each position: ascending probability, negatives first among equals. */
  readonly sortedRows: Int32Array;
  readonly sortedProbability: Float64Array;
  /** 1 where the row's truth is positive. */
  readonly sortedPositive: Uint8Array;
  /** Per dimension, the rows grouped by subgroup into segments, each in the order above. */
  readonly dimensions: readonly RankedDimension[];
  /** Per subgroup id: the position in its dimension's arrays where probability >= threshold starts. */
  readonly thresholdSplit: Int32Array | null;
}

export interface RankedDimension {
  /** patient index * 2 + (1 if positive), segment by segment. */
  readonly codes: Int32Array;
  /** Subgroup id of each segment. */
  readonly segmentSubgroup: Int32Array;
  /** Segment k spans [segmentStart[k], segmentStart[k + 1]). */
  readonly segmentStart: Int32Array;
  /** Runs of equal probability inside one segment that hold both classes: [start, end) and subgroup. */
  readonly mixedRunStart: Int32Array;
  readonly mixedRunEnd: Int32Array;
  readonly mixedRunSubgroup: Int32Array;
}

/**
 * Sorts one label's known rows and builds the per-dimension segments.
 * `membership[row * dimensionCount + d]` is the row's subgroup id in dimension d; `threshold` (or
 * null) fixes where predicted-positive starts in each segment.
 */
export function rankLabel(
  truth: Int8Array,
  probability: Float64Array,
  patientOfRow: Int32Array,
  membership: Uint16Array,
  dimensionCount: number,
  subgroupCount: number,
  threshold: number | null,
): RankedLabel {
  let count = 0;
  for (let row = 0; row < truth.length; row++) {
    if (truth[row] === TRUTH_POSITIVE || truth[row] === TRUTH_NEGATIVE) count++;
  }
  const sortedRows = new Int32Array(count);
  let next = 0;
  for (let row = 0; row < truth.length; row++) {
    if (truth[row] === TRUTH_POSITIVE || truth[row] === TRUTH_NEGATIVE) sortedRows[next++] = row;
  }
  sortedRows.sort((a, b) => probability[a] - probability[b] || truth[a] - truth[b] || a - b);

  // Gather everything per row once, in sorted order, so the per-dimension work below reads sequentially.
  const sortedProbability = new Float64Array(count);
  const sortedPositive = new Uint8Array(count);
  const sortedCode = new Int32Array(count);
  const sortedMembership = new Uint16Array(count * dimensionCount);
  for (let position = 0; position < count; position++) {
    const row = sortedRows[position];
    const positive = truth[row] === TRUTH_POSITIVE ? 1 : 0;
    sortedProbability[position] = probability[row];
    sortedPositive[position] = positive;
    sortedCode[position] = patientOfRow[row] * 2 + positive;
    for (let dimension = 0; dimension < dimensionCount; dimension++) {
      sortedMembership[position * dimensionCount + dimension] = membership[row * dimensionCount + dimension];
    }
  }

  const thresholdSplit = threshold === null ? null : new Int32Array(subgroupCount).fill(-1);
  const dimensions: RankedDimension[] = [];
  const sizeOf = new Int32Array(subgroupCount);
  const fillAt = new Int32Array(subgroupCount);
  for (let dimension = 0; dimension < dimensionCount; dimension++) {
    // Counting sort by subgroup keeps the sorted order inside each segment.
    sizeOf.fill(0);
    for (let position = 0; position < count; position++) {
      sizeOf[sortedMembership[position * dimensionCount + dimension]]++;
    }
    const segments: number[] = [];
    let offset = 0;
    for (let subgroup = 0; subgroup < subgroupCount; subgroup++) {
      if (sizeOf[subgroup] === 0) continue;
      segments.push(subgroup);
      fillAt[subgroup] = offset;
      offset += sizeOf[subgroup];
    }
    const segmentSubgroup = Int32Array.from(segments);
    const segmentStart = new Int32Array(segments.length + 1);
    for (let segment = 0; segment < segments.length; segment++)
      segmentStart[segment] = fillAt[segments[segment]];
    segmentStart[segments.length] = count;

    const codes = new Int32Array(count);
    const segmentProbability = new Float64Array(count);
    for (let position = 0; position < count; position++) {
      const at = fillAt[sortedMembership[position * dimensionCount + dimension]]++;
      codes[at] = sortedCode[position];
      segmentProbability[at] = sortedProbability[position];
    }
    const mixedRunStart: number[] = [];
    const mixedRunEnd: number[] = [];
    const mixedRunSubgroup: number[] = [];
    for (let segment = 0; segment < segments.length; segment++) {
      const end = segmentStart[segment + 1];
      let runStart = segmentStart[segment];
      while (runStart < end) {
        let runEnd = runStart + 1;
        while (runEnd < end && segmentProbability[runEnd] === segmentProbability[runStart]) runEnd++;
        // Negatives come first in a run, so it holds both classes iff it starts negative and ends positive.
        if ((codes[runStart] & 1) === 0 && (codes[runEnd - 1] & 1) === 1) {
          mixedRunStart.push(runStart);
          mixedRunEnd.push(runEnd);
          mixedRunSubgroup.push(segments[segment]);
        }
        runStart = runEnd;
      }
      if (thresholdSplit !== null && threshold !== null) {
        let split = segmentStart[segment];
        while (split < end && segmentProbability[split] < threshold) split++;
        thresholdSplit[segments[segment]] = split;
      }
    }
    dimensions.push({
      codes,
      segmentSubgroup,
      segmentStart,
      mixedRunStart: Int32Array.from(mixedRunStart),
      mixedRunEnd: Int32Array.from(mixedRunEnd),
      mixedRunSubgroup: Int32Array.from(mixedRunSubgroup),
    });
  }
  return { count, sortedRows, sortedProbability, sortedPositive, dimensions, thresholdSplit };
}

/**
 * How many times each patient counts in a pass: 1 for the point estimate, the resampling
 * multiplicity in a bootstrap round. Bytes rather than doubles so the weights of 40,000 patients stay
 * in the L1 cache during the passes, which gather them at random.
 */
export type PatientWeights = Uint8Array;

/** Weighted sums per subgroup id, filled by {@link accumulateRankedLabel}. */
export interface SubgroupCounts {
  readonly positives: Float64Array;
  readonly negatives: Float64Array;
  /** Sum over (positive, negative) pairs of w_pos * w_neg * (1 if positive scores higher, 1/2 if tied). */
  readonly concordantPairs: Float64Array;
  /** Positives predicted negative (probability below the threshold): false negatives. */
  readonly positivesBelowThreshold: Float64Array;
  /** Negatives predicted negative: true negatives. */
  readonly negativesBelowThreshold: Float64Array;
}

export function createSubgroupCounts(subgroupCount: number): SubgroupCounts {
  return {
    positives: new Float64Array(subgroupCount),
    negatives: new Float64Array(subgroupCount),
    concordantPairs: new Float64Array(subgroupCount),
    positivesBelowThreshold: new Float64Array(subgroupCount),
    negativesBelowThreshold: new Float64Array(subgroupCount),
  };
}

// Running sums of a segment walk, kept in a small array between the two halves of a segment.
const NEGATIVES = 0;
const POSITIVES = 1;
const PAIRS = 2;
const segmentSums = new Float64Array(3);

/**
 * Walks elements [from, to) of one segment. Branch-free on purpose: whether a row is positive (or
 * has weight 0) is unpredictable, so it enters as a 0/1 factor. All sums are of integers below 2^53,
 * hence exact.
 */
function walkSegment(codes: Int32Array, patientWeight: PatientWeights, from: number, to: number): void {
  let negatives = segmentSums[NEGATIVES];
  let positives = segmentSums[POSITIVES];
  let pairs = segmentSums[PAIRS];
  for (let at = from; at < to; at++) {
    const code = codes[at];
    const weight = patientWeight[code >> 1];
    const positiveWeight = (code & 1) * weight;
    pairs += positiveWeight * negatives;
    positives += positiveWeight;
    negatives += weight - positiveWeight;
  }
  segmentSums[NEGATIVES] = negatives;
  segmentSums[POSITIVES] = positives;
  segmentSums[PAIRS] = pairs;
}

/**
 * One weighted pass over a ranked label. `patientWeight[p]` is how many times patient p counts.
 * Without a threshold the below-threshold counts stay zero and must not be used.
 */
export function accumulateRankedLabel(
  ranked: RankedLabel,
  patientWeight: PatientWeights,
  counts: SubgroupCounts,
): void {
  const split = ranked.thresholdSplit;
  // A subgroup whose rows of this label are all uncertain or blank has no segment below; without
  // this reset it would keep the previous label's counts (the scratch is shared across labels).
  for (const sums of Object.values(counts)) sums.fill(0);
  for (const dimension of ranked.dimensions) {
    const { codes, segmentSubgroup, segmentStart } = dimension;
    for (let segment = 0; segment < segmentSubgroup.length; segment++) {
      const subgroup = segmentSubgroup[segment];
      const end = segmentStart[segment + 1];
      segmentSums.fill(0);
      // The threshold falls between runs of equal probability, so the walk can pause there.
      const middle = split === null ? end : split[subgroup];
      walkSegment(codes, patientWeight, segmentStart[segment], middle);
      counts.positivesBelowThreshold[subgroup] = split === null ? 0 : segmentSums[POSITIVES];
      counts.negativesBelowThreshold[subgroup] = split === null ? 0 : segmentSums[NEGATIVES];
      walkSegment(codes, patientWeight, middle, end);
      counts.positives[subgroup] = segmentSums[POSITIVES];
      counts.negatives[subgroup] = segmentSums[NEGATIVES];
      counts.concordantPairs[subgroup] = segmentSums[PAIRS];
    }
    // Tied pairs were counted whole above; take half of each back.
    const { mixedRunStart, mixedRunEnd, mixedRunSubgroup } = dimension;
    for (let run = 0; run < mixedRunStart.length; run++) {
      let runPositives = 0;
      let runNegatives = 0;
      for (let at = mixedRunStart[run]; at < mixedRunEnd[run]; at++) {
        const code = codes[at];
        const weight = patientWeight[code >> 1];
        const positiveWeight = (code & 1) * weight;
        runPositives += positiveWeight;
        runNegatives += weight - positiveWeight;
      }
      counts.concordantPairs[mixedRunSubgroup[run]] -= 0.5 * runPositives * runNegatives;
    }
  }
}

/** AUROC from the pass's sums, or NaN where one class is absent (AUROC is undefined there). */
export function aurocFromCounts(counts: SubgroupCounts, group: number): number {
  const positives = counts.positives[group];
  const negatives = counts.negatives[group];
  if (positives === 0 || negatives === 0) return Number.NaN;
  return counts.concordantPairs[group] / (positives * negatives);
}

/**
 * Exact AUROC of one score vector against truth coded 1, 0, -1 (uncertain) or -2/NaN (blank); only
 * 1 and 0 take part. NaN when only one class is present. A convenience over the subgroup pass for
 * callers with plain arrays, such as classifier training.
 */
export function auroc(truth: ArrayLike<number>, probability: ArrayLike<number>): number {
  const rowCount = truth.length;
  if (probability.length !== rowCount) {
    throw new Error(`auroc: ${rowCount} truth values but ${probability.length} probabilities`);
  }
  const truthCodes = new Int8Array(rowCount);
  for (let row = 0; row < rowCount; row++) {
    const value = truth[row];
    if (Number.isNaN(value)) truthCodes[row] = TRUTH_BLANK;
    else if (value === 1 || value === 0 || value === TRUTH_UNCERTAIN || value === TRUTH_BLANK)
      truthCodes[row] = value;
    else throw new Error(`auroc: truth value ${value} at row ${row} is not 1, 0, -1 or blank`);
    if (!(probability[row] >= 0 && probability[row] <= 1)) {
      throw new Error(`auroc: probability ${probability[row]} at row ${row} is outside [0, 1]`);
    }
  }
  const ranked = rankLabel(
    truthCodes,
    Float64Array.from(probability),
    new Int32Array(rowCount),
    new Uint16Array(rowCount),
    1,
    1,
    null,
  );
  const counts = createSubgroupCounts(1);
  accumulateRankedLabel(ranked, new Uint8Array([1]), counts);
  return aurocFromCounts(counts, 0);
}

/** The empirical ROC curve (unweighted), one point per distinct threshold, from (0,0) to (1,1). */
export function rocCurve(ranked: RankedLabel): { falsePositiveRate: number[]; truePositiveRate: number[] } {
  let positives = 0;
  for (let position = 0; position < ranked.count; position++) positives += ranked.sortedPositive[position];
  const negatives = ranked.count - positives;
  const falsePositiveRate = [0];
  const truePositiveRate = [0];
  let truePositives = 0;
  let falsePositives = 0;
  // Walk from the highest score down, emitting a point after each run of equal scores.
  let position = ranked.count - 1;
  while (position >= 0) {
    const value = ranked.sortedProbability[position];
    while (position >= 0 && ranked.sortedProbability[position] === value) {
      if (ranked.sortedPositive[position] === 1) truePositives++;
      else falsePositives++;
      position--;
    }
    falsePositiveRate.push(negatives === 0 ? Number.NaN : falsePositives / negatives);
    truePositiveRate.push(positives === 0 ? Number.NaN : truePositives / positives);
  }
  return { falsePositiveRate, truePositiveRate };
}
