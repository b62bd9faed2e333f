/**
 * The ground truth of one phantom radiograph: everything `renderPhantom` needs, and everything the
 * side file `phantom.jsonl` keeps beside each image.
 *
 * Geometry lives in the *body frame*: origin on the midline at the level of the lung apices, x to the
 * image's right (the patient's left), y down, and the unit is half the inner thoracic width at its
 * widest. In that unit the cardiothoracic ratio is simply the heart's half-width. `Acquisition.placement`
 * maps the body frame onto the image, so one patient can be rendered at any size or position.
 */
import type { Race, Sex } from "../records.ts";

/** The patient's side. The patient's right appears on the image's left (radiological convention). */
export type Side = "right" | "left";
export const SIDES: readonly Side[] = ["right", "left"];

export type Severity = "mild" | "moderate" | "severe";
export const SEVERITIES: readonly Severity[] = ["mild", "moderate", "severe"];

/** How the (simulated) report states a finding that is present: CheXpert's 1 or -1. */
export type Reported = "positive" | "uncertain";

export type ViewPosition = "PA" | "AP";

export interface Demographics {
  sex: Sex;
  /** Whole years, 0-90. */
  age: number;
  race: Race;
}

/** Body build; 1 is the adult average unless stated otherwise. */
export interface Habitus {
  /** Scale of the thorax in the field of view (children are smaller, so more neck and abdomen show). */
  thoraxScale: number;
  /** Soft-tissue (fat and muscle) thickness. */
  softTissue: number;
  /** Breast soft tissue, 0 (none) to about 1.6. */
  breast: number;
  /** Bone mineral density: ribs, clavicles, spine. */
  boneDensity: number;
  /** Calcification of the costal cartilages, 0-1 (rises with age). */
  cartilageCalcification: number;
}

export interface HeartGeometry {
  /** Half of the widest transverse diameter; equals the drawn cardiothoracic ratio. */
  halfWidth: number;
  halfHeight: number;
  centerX: number;
  centerY: number;
  /** Horizontal shift per unit of depth: the apex points down and to the patient's left. */
  shear: number;
}

export interface RibCage {
  /** Vertical distance between neighbouring posterior ribs. */
  spacing: number;
  halfWidth: number;
  /** How steeply the posterior ribs fall laterally (children's ribs run more horizontally). */
  slope: number;
  /** y of the first posterior rib where it leaves the spine. */
  firstY: number;
  count: number;
}

export interface Anatomy {
  /** Apex to costophrenic angle, per side. */
  lungHeight: Record<Side, number>;
  /** How far the diaphragm dome rises above the costophrenic angle, per side. */
  domeRise: Record<Side, number>;
  /** Half-width of the mediastinum above the heart (before any widening finding). */
  mediastinumHalfWidth: number;
  /** Bulge of the aortic knob at the patient's left upper mediastinum (grows with age). */
  aorticKnob: number;
  /** Infant thymus widening the upper mediastinum, 0-1; a normal variant, not a finding. */
  thymus: number;
  heart: HeartGeometry;
  ribs: RibCage;
  /** y of the clavicles' medial ends. */
  clavicleY: number;
  spineHalfWidth: number;
  /** Air in the stomach under the left hemidiaphragm; null when absent. */
  gastricBubble: { x: number; y: number; radius: number } | null;
  /** Seed of the lung-marking and texture fields (resolution-independent, in body coordinates). */
  textureSeed: number;
}

export interface Point {
  x: number;
  y: number;
}

export interface Blob {
  x: number;
  y: number;
  radius: number;
}

export interface Segment {
  x0: number;
  y0: number;
  x1: number;
  y1: number;
  halfWidth: number;
}

export type Lobe = "RUL" | "RML" | "RLL" | "LUL" | "lingula" | "LLL";

interface FindingBase {
  severity: Severity;
  reported: Reported;
}

export interface CardiomegalyFinding extends FindingBase {
  kind: "cardiomegaly";
}

export interface MediastinalWideningFinding extends FindingBase {
  kind: "mediastinalWidening";
  /** Multiplies the upper mediastinal half-width. */
  widthFactor: number;
}

export interface PleuralEffusionFinding extends FindingBase {
  kind: "pleuralEffusion";
  side: Side;
  /** Height of the fluid above the costophrenic angle at the medial end of the meniscus. */
  height: number;
  /** How much higher the fluid climbs along the lateral chest wall (the meniscus). */
  meniscus: number;
  /**
   * Supine film: the fluid layers behind the lung as a veil of this opacity (0-1) over the hemithorax
   * instead of forming a meniscus; 0 on an upright film.
   */
  veil: number;
}

export interface PneumothoraxFinding extends FindingBase {
  kind: "pneumothorax";
  side: Side;
  /** Fraction by which the lung has collapsed away from the apex and lateral chest wall. */
  collapse: number;
}

export interface ConsolidationFinding extends FindingBase {
  kind: "consolidation";
  side: Side;
  lobe: Lobe;
  blobs: Blob[];
  /** Share of the alveolar air replaced by fluid at the centre of the consolidation. */
  density: number;
}

/** Ill-defined opacity that is not called consolidation: ground glass, contusion, aspiration. */
export interface OpacityFinding extends FindingBase {
  kind: "opacity";
  side: Side;
  blobs: Blob[];
  density: number;
}

export interface EdemaFinding extends FindingBase {
  kind: "edema";
  /** Strength of the bilateral perihilar haze. */
  haze: number;
  /** Kerley B lines: short horizontal lines at the lateral lung bases. */
  septalLines: Segment[];
}

export interface LesionFinding extends FindingBase {
  kind: "lesion";
  side: Side;
  x: number;
  y: number;
  radius: number;
  /** 0 for a smooth nodule; larger for a lobulated mass. */
  lobulation: number;
  phase: number;
}

export interface AtelectasisFinding extends FindingBase {
  kind: "atelectasis";
  side: Side;
  /** Plate-like bands at the base, or collapse of the lower lobe behind the heart or diaphragm. */
  pattern: "plate" | "lobar";
  plates: Segment[];
}

export interface RibFracture {
  /** Posterior rib index, 0 = first rib. */
  rib: number;
  /** Lateral coordinate of the break (0 at the spine, 1 at the inner chest wall). */
  position: number;
  /** Step between the fragments, body units. */
  displacement: number;
}

export interface FractureFinding extends FindingBase {
  kind: "fracture";
  side: Side;
  fractures: RibFracture[];
}

export interface PleuralPlaque {
  y: number;
  length: number;
  thickness: number;
  calcified: boolean;
}

/** CheXpert's "Pleural Other": pleural thickening and plaques along the lateral chest wall. */
export interface PleuralThickeningFinding extends FindingBase {
  kind: "pleuralThickening";
  side: Side;
  plaques: PleuralPlaque[];
}

export type Finding =
  | CardiomegalyFinding
  | MediastinalWideningFinding
  | PleuralEffusionFinding
  | PneumothoraxFinding
  | ConsolidationFinding
  | OpacityFinding
  | EdemaFinding
  | LesionFinding
  | AtelectasisFinding
  | FractureFinding
  | PleuralThickeningFinding;
export type FindingKind = Finding["kind"];

export type Device =
  | { kind: "endotrachealTube"; tipY: number }
  | { kind: "entericTube"; tipX: number; tipY: number }
  | { kind: "centralLine"; side: Side; entry: "jugular" | "subclavian"; tipY: number }
  | { kind: "ecgLeads"; electrodes: Point[] }
  | { kind: "pacemaker"; side: Side; x: number; y: number; leads: number }
  | { kind: "sternotomyWires"; count: number; top: number; bottom: number }
  | { kind: "chestTube"; side: Side; entryY: number; tipX: number; tipY: number };
export type DeviceKind = Device["kind"];

export type Corner = "top-left" | "top-right" | "bottom-left" | "bottom-right";

/** A lead letter marker or text tag burnt into the image, in image coordinates (0-1). */
export interface Marker {
  text: string;
  x: number;
  y: number;
  /** Letter height as a fraction of the image height. */
  height: number;
}

export interface Acquisition {
  view: ViewPosition;
  /** Supine portable film: effusions layer, arms lie beside the chest. */
  supine: boolean;
  armsAtSides: boolean;
  /** Where the body frame lies on the image: origin (image fraction), unit length, rotation (radians). */
  placement: { originX: number; originY: number; unit: number; tilt: number };
  /** Detector response: 1 - exp(-gain * attenuation), windowed to [windowLow, windowHigh], then gamma. */
  exposure: { gain: number; gamma: number; windowLow: number; windowHigh: number; heel: number };
  /** Quantum noise: standard deviation at mid-grey, in display units. */
  noise: { sigma: number; seed: number };
  /** Detector blur, Gaussian sigma as a fraction of the image width. */
  blur: number;
  /** Unsharp-mask edge enhancement some vendors apply. */
  sharpen: { amount: number; radius: number };
  /** Unexposed border left by the collimator, as a fraction of the image. */
  collimation: number;
  markers: Marker[];
}

export interface PhantomParameters {
  demographics: Demographics;
  habitus: Habitus;
  anatomy: Anatomy;
  findings: Finding[];
  devices: Device[];
  acquisition: Acquisition;
}
