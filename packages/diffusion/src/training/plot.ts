/**
 * The loss curve of a training run as SVG, rendered to PNG with sharp (as the classifier's plots; the
 * diffusion package does not import the classifier, so the few lines of axis drawing live here).
 * The raw per-step loss is drawn faint with a moving average over it.
 */
import { readFileSync, renameSync, writeFileSync } from "node:fs";
import sharp from "sharp";

const FONT = `font-family="DejaVu Sans, Arial, sans-serif"`;

export interface LossPoint {
  step: number;
  loss: number;
}

export function readLossCsv(path: string): LossPoint[] {
  const lines = readFileSync(path, "utf8").split("\n").slice(1);
  return lines
    .filter((line) => line.trim().length > 0)
    .map((line) => {
      const [step, loss] = line.split(",").map(Number);
      return { step, loss };
    })
    .filter((point) => Number.isFinite(point.step) && Number.isFinite(point.loss));
}

function movingAverage(values: number[], window: number): number[] {
  const out: number[] = [];
  let sum = 0;
  values.forEach((value, index) => {
    sum += value;
    if (index >= window) sum -= values[index - window];
    out.push(sum / Math.min(index + 1, window));
  });
  return out;
}

function niceTicks(low: number, high: number, count = 5): number[] {
  const span = high - low || 1;
  const raw = span / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((f) => f * magnitude).find((f) => f >= raw) ?? raw;
  const ticks: number[] = [];
  for (let tick = Math.ceil(low / step) * step; tick <= high + 1e-12; tick += step) ticks.push(tick);
  return ticks;
}

export function lossCurveSvg(points: LossPoint[], title: string): string {
  const plot = { width: 560, height: 300 };
  const margin = { left: 64, right: 20, top: 40, bottom: 48 };
  const width = margin.left + plot.width + margin.right;
  const height = margin.top + plot.height + margin.bottom;
  const steps = points.map((point) => point.step);
  const losses = points.map((point) => point.loss);
  const minStep = Math.min(...steps, 0);
  const maxStep = Math.max(...steps, 1);
  const sorted = [...losses].sort((a, b) => a - b);
  // Clip the y range at the 98th percentile so the first steps' spike does not flatten the curve.
  const top = sorted.length > 0 ? sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.98))] : 1;
  const bottom = sorted.length > 0 ? Math.min(0, sorted[0]) : 0;
  const x = (step: number) => margin.left + ((step - minStep) / (maxStep - minStep || 1)) * plot.width;
  const y = (loss: number) =>
    margin.top + (1 - (Math.min(loss, top) - bottom) / (top - bottom || 1)) * plot.height;
  const line = (values: number[]) =>
    values.map((value, index) => `${x(steps[index]).toFixed(1)},${y(value).toFixed(1)}`).join(" ");
  const smooth = movingAverage(losses, Math.max(1, Math.round(points.length / 50)));
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${width / 2}" y="24" text-anchor="middle" font-size="15" ${FONT}>${title.replaceAll("&", "&amp;").replaceAll("<", "&lt;")}</text>`,
    ...niceTicks(bottom, top).map(
      (tick) =>
        `<line x1="${margin.left}" y1="${y(tick)}" x2="${margin.left + plot.width}" y2="${y(tick)}" stroke="#eee"/>` +
        `<text x="${margin.left - 6}" y="${y(tick) + 4}" text-anchor="end" font-size="11" ${FONT}>${Number(tick.toPrecision(3))}</text>`,
    ),
    ...niceTicks(minStep, maxStep).map(
      (tick) =>
        `<text x="${x(tick)}" y="${margin.top + plot.height + 16}" text-anchor="middle" font-size="11" ${FONT}>${tick}</text>`,
    ),
    `<rect x="${margin.left}" y="${margin.top}" width="${plot.width}" height="${plot.height}" fill="none" stroke="#333"/>`,
    points.length > 0
      ? `<polyline points="${line(losses)}" fill="none" stroke="#9ecae1" stroke-width="1"/>`
      : "",
    points.length > 0
      ? `<polyline points="${line(smooth)}" fill="none" stroke="#08519c" stroke-width="2"/>`
      : "",
    `<text x="${margin.left + plot.width / 2}" y="${height - 12}" text-anchor="middle" font-size="12" ${FONT}>step</text>`,
    `<text x="16" y="${margin.top + plot.height / 2}" text-anchor="middle" font-size="12" ${FONT} transform="rotate(-90 16 ${margin.top + plot.height / 2})">loss</text>`,
    "</svg>",
  ].join("\n");
}

/** Reads the loss CSV and writes its curve as PNG (atomically); returns the path. */
export async function writeLossPlot(csvPath: string, pngPath: string, title: string): Promise<string> {
  const points = readLossCsv(csvPath);
  const svg = lossCurveSvg(points, `${title}: training loss (${points.length} steps)`);
  const png = await sharp(Buffer.from(svg)).png().toBuffer();
  const temporary = `${pngPath}.tmp-${process.pid}`;
  writeFileSync(temporary, png);
  renameSync(temporary, pngPath);
  return pngPath;
}
