/**
 * From latent conditions to drawn findings with severities and geometry. Several conditions can cause
 * the same finding (heart failure and pneumonia both cause effusions); findings are merged so that a
 * side has at most one effusion, one pneumothorax, and so on, keeping the more severe.
 *
 * Severity-to-geometry rules follow radiology practice: cardiomegaly is a cardiothoracic ratio above
 * 0.5; a small effusion only blunts the costophrenic angle, a large one climbs to mid-lung; a small
 * pneumothorax is a thin apical rim, a large one a lung collapsed by half.
 */

import type { Rng } from "../../random.ts";
import type { Condition } from "../conditions.ts";
import { hemithorax, lateralMargin } from "../render/geometry.ts";
import {
  type Anatomy,
  type Blob,
  type Finding,
  type Lobe,
  type Reported,
  SEVERITIES,
  type Segment,
  type Severity,
  type Side,
} from "../types.ts";

type SeverityWeights = Readonly<Record<Severity, number>>;

/** Chance that the report hedges ("possible", "may represent") about a present finding: CheXpert's -1. */
export const UNCERTAIN_REPORT_RATE: Readonly<Record<Severity, number>> = {
  mild: 0.3,
  moderate: 0.07,
  severe: 0,
};

/** Drawn cardiothoracic ratio ranges by severity; below 0.5 is normal by definition. */
export const CARDIOTHORACIC_RATIO_BY_SEVERITY: Readonly<Record<Severity, readonly [number, number]>> = {
  mild: [0.51, 0.55],
  moderate: [0.55, 0.6],
  severe: [0.6, 0.65],
};

const LOBE_REGIONS: Readonly<
  Record<Lobe, { side: Side; lateral: [number, number]; depth: [number, number] }>
> = {
  RUL: { side: "right", lateral: [0.35, 0.8], depth: [0.12, 0.45] },
  RML: { side: "right", lateral: [0.25, 0.55], depth: [0.55, 0.78] },
  RLL: { side: "right", lateral: [0.35, 0.85], depth: [0.7, 0.9] },
  LUL: { side: "left", lateral: [0.4, 0.8], depth: [0.12, 0.45] },
  lingula: { side: "left", lateral: [0.5, 0.8], depth: [0.55, 0.78] },
  LLL: { side: "left", lateral: [0.4, 0.85], depth: [0.72, 0.9] },
};
/** Lower lobes are where aspiration and most pneumonias go. */
const LOBE_WEIGHTS: Readonly<Record<Lobe, number>> = {
  RUL: 0.12,
  RML: 0.13,
  RLL: 0.3,
  LUL: 0.1,
  lingula: 0.08,
  LLL: 0.27,
};

const COMMON: SeverityWeights = { mild: 0.45, moderate: 0.4, severe: 0.15 };
const MOSTLY_MILD: SeverityWeights = { mild: 0.65, moderate: 0.28, severe: 0.07 };

function sign(side: Side): number {
  return side === "right" ? -1 : 1;
}

function otherSide(side: Side): Side {
  return side === "right" ? "left" : "right";
}

function severityRank(severity: Severity): number {
  return SEVERITIES.indexOf(severity);
}

export class FindingSampler {
  readonly findings: Finding[] = [];
  constructor(
    private readonly rng: Rng,
    private readonly anatomy: Anatomy,
    /** Supine films layer effusions instead of forming a meniscus. */
    private readonly supine: boolean,
  ) {}

  private severity(weights: SeverityWeights): Severity {
    return this.rng.weighted(weights);
  }

  private reported(severity: Severity): Reported {
    return this.rng.chance(UNCERTAIN_REPORT_RATE[severity]) ? "uncertain" : "positive";
  }

  private side(rightWeight = 0.5): Side {
    return this.rng.chance(rightWeight) ? "right" : "left";
  }

  /** Adds a finding, or keeps the more severe of it and an existing one of the same kind and side. */
  private merge(finding: Finding): void {
    const sameSlot = this.findings.findIndex(
      (existing) =>
        existing.kind === finding.kind &&
        (!("side" in existing) || !("side" in finding) || existing.side === finding.side) &&
        (finding.kind !== "consolidation" ||
          (existing.kind === "consolidation" && existing.lobe === finding.lobe)) &&
        finding.kind !== "lesion" &&
        finding.kind !== "opacity",
    );
    if (sameSlot < 0) {
      this.findings.push(finding);
      return;
    }
    const existing = this.findings[sameSlot];
    if (existing.kind === "fracture" && finding.kind === "fracture") {
      const ribs = new Set(existing.fractures.map((fracture) => fracture.rib));
      existing.fractures.push(...finding.fractures.filter((fracture) => !ribs.has(fracture.rib)));
      if (severityRank(finding.severity) > severityRank(existing.severity))
        existing.severity = finding.severity;
      return;
    }
    if (severityRank(finding.severity) > severityRank(existing.severity)) this.findings[sameSlot] = finding;
  }

  cardiomegaly(weights: SeverityWeights): void {
    const severity = this.severity(weights);
    this.merge({ kind: "cardiomegaly", severity, reported: this.reported(severity) });
  }

  mediastinalWidening(weights: SeverityWeights): void {
    const severity = this.severity(weights);
    const range = { mild: [1.25, 1.4], moderate: [1.4, 1.6], severe: [1.6, 1.9] }[severity];
    this.merge({
      kind: "mediastinalWidening",
      severity,
      reported: this.reported(severity),
      widthFactor: this.rng.uniform(range[0], range[1]),
    });
  }

  effusion(side: Side, weights: SeverityWeights): void {
    const severity = this.severity(weights);
    const height = { mild: [0, 0.06], moderate: [0.15, 0.3], severe: [0.45, 0.75] }[severity];
    const meniscus = { mild: [0.06, 0.12], moderate: [0.14, 0.24], severe: [0.18, 0.3] }[severity];
    const veil = { mild: [0.15, 0.25], moderate: [0.3, 0.45], severe: [0.5, 0.7] }[severity];
    this.merge({
      kind: "pleuralEffusion",
      side,
      severity,
      reported: this.reported(severity),
      height: this.rng.uniform(height[0], height[1]),
      meniscus: this.rng.uniform(meniscus[0], meniscus[1]),
      veil: this.supine ? this.rng.uniform(veil[0], veil[1]) : 0,
    });
  }

  /** Effusions on one side, or both (bilateral effusions are the usual ones in heart failure). */
  effusions(bilateralShare: number, rightShare: number, weights: SeverityWeights): void {
    if (this.rng.chance(bilateralShare)) {
      this.effusion("right", weights);
      this.effusion("left", weights);
    } else {
      this.effusion(this.side(rightShare), weights);
    }
  }

  pneumothorax(side: Side, weights: SeverityWeights): Severity {
    const severity = this.severity(weights);
    const collapse = { mild: [0.06, 0.12], moderate: [0.15, 0.28], severe: [0.32, 0.5] }[severity];
    this.merge({
      kind: "pneumothorax",
      side,
      severity,
      reported: this.reported(severity),
      collapse: this.rng.uniform(collapse[0], collapse[1]),
    });
    return severity;
  }

  private blobsIn(
    side: Side,
    lateral: readonly [number, number],
    depth: readonly [number, number],
    count: number,
    radius: readonly [number, number],
  ): Blob[] {
    const height = this.anatomy.lungHeight[side];
    const blobs: Blob[] = [];
    // Blobs cluster around a centre so that a consolidation reads as one region, not scattered dots.
    const centerU = this.rng.uniform(lateral[0], lateral[1]);
    const centerY = this.rng.uniform(depth[0], depth[1]) * height;
    for (let i = 0; i < count; i++) {
      const u = Math.min(0.9, Math.max(0.2, centerU + this.rng.normal(0, 0.1)));
      blobs.push({
        x: sign(side) * u,
        y: centerY + this.rng.normal(0, 0.08),
        radius: this.rng.uniform(radius[0], radius[1]),
      });
    }
    return blobs;
  }

  consolidation(lobe: Lobe | null, weights: SeverityWeights): void {
    const chosen = lobe ?? this.rng.weighted(LOBE_WEIGHTS);
    const region = LOBE_REGIONS[chosen];
    const severity = this.severity(weights);
    const count = { mild: 2, moderate: this.rng.int(3, 4), severe: this.rng.int(5, 6) }[severity];
    const radius = { mild: [0.08, 0.12], moderate: [0.1, 0.16], severe: [0.14, 0.22] }[severity] as [
      number,
      number,
    ];
    const density = { mild: [0.45, 0.6], moderate: [0.65, 0.8], severe: [0.85, 0.95] }[severity];
    this.merge({
      kind: "consolidation",
      side: region.side,
      lobe: chosen,
      severity,
      reported: this.reported(severity),
      blobs: this.blobsIn(region.side, region.lateral, region.depth, count, radius),
      density: this.rng.uniform(density[0], density[1]),
    });
  }

  opacity(side: Side, weights: SeverityWeights): void {
    const severity = this.severity(weights);
    const count = { mild: 2, moderate: 3, severe: 5 }[severity];
    const radius = { mild: [0.06, 0.1], moderate: [0.08, 0.13], severe: [0.1, 0.18] }[severity] as [
      number,
      number,
    ];
    const density = { mild: [0.3, 0.4], moderate: [0.4, 0.55], severe: [0.55, 0.7] }[severity];
    this.merge({
      kind: "opacity",
      side,
      severity,
      reported: this.reported(severity),
      blobs: this.blobsIn(side, [0.3, 0.85], [0.2, 0.85], count, radius),
      density: this.rng.uniform(density[0], density[1]),
    });
  }

  edema(weights: SeverityWeights): void {
    const severity = this.severity(weights);
    const haze = { mild: [0.2, 0.3], moderate: [0.35, 0.5], severe: [0.55, 0.75] }[severity];
    const linesPerSide = {
      mild: this.rng.int(0, 2),
      moderate: this.rng.int(3, 5),
      severe: this.rng.int(5, 8),
    }[severity];
    const septalLines: Segment[] = [];
    for (const side of ["right", "left"] as const) {
      const thorax = hemithorax(this.anatomy, side);
      for (let i = 0; i < linesPerSide; i++) {
        const y = thorax.height * this.rng.uniform(0.7, 0.93);
        const wall = lateralMargin(thorax, y) - 0.01;
        const length = this.rng.uniform(0.05, 0.09);
        septalLines.push({
          x0: sign(side) * wall,
          y0: y,
          x1: sign(side) * (wall - length),
          y1: y,
          halfWidth: 0.005,
        });
      }
    }
    this.merge({
      kind: "edema",
      severity,
      reported: this.reported(severity),
      haze: this.rng.uniform(haze[0], haze[1]),
      septalLines,
    });
  }

  lesion(side: Side, mass: boolean): void {
    const severity: Severity = mass ? "severe" : this.rng.chance(0.5) ? "mild" : "moderate";
    const radius = { mild: [0.02, 0.03], moderate: [0.03, 0.05], severe: [0.08, 0.15] }[severity];
    const height = this.anatomy.lungHeight[side];
    this.findings.push({
      kind: "lesion",
      side,
      severity,
      reported: this.reported(severity),
      x: sign(side) * this.rng.uniform(0.38, 0.82),
      y: height * this.rng.uniform(0.15, 0.72),
      radius: this.rng.uniform(radius[0], radius[1]),
      lobulation: mass ? this.rng.uniform(0.1, 0.25) : this.rng.uniform(0, 0.05),
      phase: this.rng.uniform(0, 2 * Math.PI),
    });
  }

  atelectasis(side: Side, weights: SeverityWeights): void {
    const severity = this.severity(weights);
    const pattern = severity === "severe" ? "lobar" : "plate";
    const height = this.anatomy.lungHeight[side];
    const plates: Segment[] = [];
    const count = severity === "mild" ? 1 : 2;
    for (let i = 0; pattern === "plate" && i < count; i++) {
      const y = height * this.rng.uniform(0.68, 0.86);
      const start = this.rng.uniform(0.3, 0.5);
      const end = start + this.rng.uniform(0.2, 0.35);
      const tilt = this.rng.uniform(-0.04, 0.04);
      plates.push({
        x0: sign(side) * start,
        y0: y - tilt,
        x1: sign(side) * end,
        y1: y + tilt,
        halfWidth: this.rng.uniform(0.01, 0.018),
      });
    }
    this.merge({ kind: "atelectasis", side, severity, reported: this.reported(severity), pattern, plates });
  }

  fracture(side: Side, weights: SeverityWeights): void {
    const severity = this.severity(weights);
    const count = severity === "severe" ? this.rng.int(2, 3) : 1;
    const first = this.rng.int(3, 8 - (count - 1));
    const position = this.rng.uniform(0.6, 0.92);
    const fractures = [];
    for (let i = 0; i < count; i++) {
      const displacement =
        severity === "mild" ? 0 : this.rng.uniform(0.015, severity === "severe" ? 0.05 : 0.03);
      fractures.push({ rib: first + i, position: position + this.rng.normal(0, 0.03), displacement });
    }
    this.merge({ kind: "fracture", side, severity, reported: this.reported(severity), fractures });
  }

  pleuralThickening(side: Side): void {
    const count = this.rng.int(1, 3);
    const height = this.anatomy.lungHeight[side];
    const plaques = [];
    for (let i = 0; i < count; i++) {
      plaques.push({
        y: height * this.rng.uniform(0.3, 0.85),
        length: this.rng.uniform(0.15, 0.4),
        thickness: this.rng.uniform(0.02, 0.05),
        calcified: this.rng.chance(0.5),
      });
    }
    const severity: Severity = count === 1 ? "mild" : count === 2 ? "moderate" : "severe";
    this.merge({ kind: "pleuralThickening", side, severity, reported: this.reported(severity), plaques });
  }

  /** Applies each present condition's typical findings with their co-occurrence rates. */
  fromConditions(conditions: readonly Condition[]): {
    pneumothoraxSides: Side[];
    pneumothoraxNeedsDrain: boolean;
  } {
    const rng = this.rng;
    let pneumothoraxNeedsDrain = false;
    const pneumothoraxSides: Side[] = [];
    const addPneumothorax = (side: Side, weights: SeverityWeights) => {
      const severity = this.pneumothorax(side, weights);
      pneumothoraxSides.push(side);
      if (severity !== "mild") pneumothoraxNeedsDrain = true;
    };
    for (const condition of conditions) {
      switch (condition) {
        case "heartFailure":
          if (rng.chance(0.8)) this.cardiomegaly(COMMON);
          if (rng.chance(0.5)) this.edema(COMMON);
          if (rng.chance(0.5)) this.effusions(0.55, 0.65, { mild: 0.5, moderate: 0.35, severe: 0.15 });
          break;
        case "cardiomegalyIsolated":
          this.cardiomegaly(MOSTLY_MILD);
          break;
        case "aorticEctasia":
          this.mediastinalWidening(MOSTLY_MILD);
          break;
        case "malignancy": {
          const side = this.side();
          this.lesion(side, rng.chance(0.7));
          if (rng.chance(0.25)) this.mediastinalWidening(COMMON);
          if (rng.chance(0.25)) this.effusion(side, COMMON);
          if (rng.chance(0.1)) this.atelectasis(side, { mild: 0, moderate: 0, severe: 1 });
          break;
        }
        case "incidentalNodule":
          this.lesion(this.side(), false);
          break;
        case "pleuralDisease":
          if (rng.chance(0.6)) {
            this.pleuralThickening("right");
            this.pleuralThickening("left");
          } else {
            this.pleuralThickening(this.side());
          }
          break;
        case "cardiacSurgery":
          if (rng.chance(0.25)) this.cardiomegaly(MOSTLY_MILD);
          if (rng.chance(0.3)) this.effusion("left", MOSTLY_MILD);
          if (rng.chance(0.3)) this.atelectasis("left", MOSTLY_MILD);
          break;
        case "pneumonia": {
          this.consolidation(null, { mild: 0.35, moderate: 0.45, severe: 0.2 });
          if (rng.chance(0.15)) this.consolidation(null, MOSTLY_MILD);
          const pneumoniaSide = this.findings.find((finding) => finding.kind === "consolidation");
          const side =
            pneumoniaSide !== undefined && "side" in pneumoniaSide ? pneumoniaSide.side : this.side();
          if (rng.chance(0.2)) this.effusion(side, MOSTLY_MILD);
          if (rng.chance(0.15)) this.atelectasis(side, MOSTLY_MILD);
          break;
        }
        case "critical":
          if (rng.chance(0.5)) this.atelectasis(rng.chance(0.6) ? "left" : "right", COMMON);
          if (rng.chance(0.45)) this.effusions(0.5, 0.5, COMMON);
          if (rng.chance(0.25)) this.edema(COMMON);
          if (rng.chance(0.3)) {
            this.opacity("right", COMMON);
            if (rng.chance(0.6)) this.opacity("left", COMMON);
          }
          if (rng.chance(0.03)) addPneumothorax(this.side(), MOSTLY_MILD);
          break;
        case "trauma": {
          const side = this.side();
          if (rng.chance(0.7)) this.fracture(side, COMMON);
          if (rng.chance(0.3)) addPneumothorax(side, COMMON);
          if (rng.chance(0.25)) this.opacity(side, MOSTLY_MILD);
          if (rng.chance(0.12)) this.effusion(side, MOSTLY_MILD);
          break;
        }
        case "spontaneousPneumothorax":
          addPneumothorax(this.side(), { mild: 0.45, moderate: 0.4, severe: 0.15 });
          break;
        case "basilarAtelectasis":
          if (rng.chance(0.35)) {
            this.atelectasis("right", { mild: 0.7, moderate: 0.3, severe: 0 });
            this.atelectasis("left", { mild: 0.7, moderate: 0.3, severe: 0 });
          } else {
            this.atelectasis(this.side(), { mild: 0.7, moderate: 0.3, severe: 0 });
          }
          break;
      }
    }
    return { pneumothoraxSides, pneumothoraxNeedsDrain };
  }
}

export { otherSide };
