import { Rng } from "../random.ts";
import { ageBin, type ChexpertLabel, type CxrRecord } from "../records.ts";
import { labelTarget, type TargetOptions } from "./targets.ts";

export const DEMOGRAPHIC_ATTRIBUTES = ["sex", "ageBin", "race", "institution"] as const;
export type DemographicAttribute = (typeof DEMOGRAPHIC_ATTRIBUTES)[number];

/** A label's state after the uncertainty policy; "masked" is a value the loss ignores (U-Ignore). */
export type LabelState = "positive" | "negative" | "masked";

export interface BalancedSamplerOptions extends Pick<TargetOptions, "policy" | "blank"> {
  /** The demographic group is the combination of these attributes, e.g. sex x race. */
  attributes: readonly DemographicAttribute[];
  /** The label whose state makes the second half of a cell ("No Finding" balances healthy vs. not). */
  label: ChexpertLabel;
  seed: number;
}

export const DEFAULT_BALANCED_SAMPLER: BalancedSamplerOptions = {
  attributes: ["sex", "ageBin", "race"],
  label: "No Finding",
  policy: "ignore",
  blank: "negative",
  seed: 0,
};

export interface SamplerCell {
  group: string;
  label: LabelState;
  /** Indices of the records in the cell. */
  members: number[];
}

/**
 * Draws record indices so that every non-empty (demographic group x label state) cell is equally likely:
 * pick a cell uniformly, then a record of that cell uniformly, with replacement. Small cells are repeated
 * and large ones subsampled, which is the point: a classifier sees old Asian women with effusion as often
 * as young white men without findings. Records lacking one of the attributes belong to no group and are
 * never drawn; `excluded` counts them. Seeded: the same seed gives the same sequence.
 */
export class BalancedSampler implements Iterable<number> {
  readonly cells: SamplerCell[];
  readonly excluded: number;
  private readonly random: Rng;

  constructor(records: readonly CxrRecord[], options: Partial<BalancedSamplerOptions> = {}) {
    const resolved = { ...DEFAULT_BALANCED_SAMPLER, ...options };
    const cells = new Map<string, SamplerCell>();
    let excluded = 0;
    records.forEach((record, index) => {
      const group = demographicGroup(record, resolved.attributes);
      if (group === null) {
        excluded++;
        return;
      }
      const label = labelState(record, resolved);
      const key = `${group}\u0000${label}`;
      const cell = cells.get(key) ?? { group, label, members: [] };
      cell.members.push(index);
      cells.set(key, cell);
    });
    // Sorted so the draw sequence depends only on the seed, not on record order within the dataset.
    this.cells = [...cells.entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([, cell]) => cell);
    this.excluded = excluded;
    if (this.cells.length === 0) {
      throw new Error(
        `balanced sampler: no record has all of ${resolved.attributes.join(", ")} (${records.length} records)`,
      );
    }
    this.random = Rng.derive("balanced sampler", resolved.seed);
  }

  next(): number {
    const cell = this.cells[this.random.index(this.cells.length)];
    return cell.members[this.random.index(cell.members.length)];
  }

  take(count: number): number[] {
    return Array.from({ length: count }, () => this.next());
  }

  /** Endless; pair it with a step count, e.g. batches(records, { order: sampler }) and break. */
  *[Symbol.iterator](): Iterator<number> {
    while (true) yield this.next();
  }
}

/** "female|60-80|BLACK" for attributes [sex, ageBin, race]; null when any of them is unknown. */
export function demographicGroup(
  record: CxrRecord,
  attributes: readonly DemographicAttribute[],
): string | null {
  const values: string[] = [];
  for (const attribute of attributes) {
    const value =
      attribute === "ageBin"
        ? record.age === null
          ? null
          : ageBin(record.age)
        : (record[attribute] as string | null);
    if (value === null) return null;
    values.push(value);
  }
  return values.join("|");
}

function labelState(record: CxrRecord, options: BalancedSamplerOptions): LabelState {
  const [target, mask] = labelTarget(record.labels[options.label], options);
  if (mask === 0) return "masked";
  return target === 1 ? "positive" : "negative";
}
