/** Prometheus text exposition (version 0.0.4) of the queue, the jobs, the images and the kernels. */
import type { WorkQueue } from "./queue.ts";
import { JOB_STATES, type JobStore } from "./store.ts";

const escapeLabel = (value: string) =>
  value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');

export function renderMetrics(store: JobStore, queue: WorkQueue): string {
  const lines: string[] = [];
  const metric = (name: string, type: string, help: string, samples: [Record<string, string>, number][]) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, value] of samples) {
      const text = Object.entries(labels)
        .map(([key, label]) => `${key}="${escapeLabel(label)}"`)
        .join(",");
      lines.push(`${name}${text ? `{${text}}` : ""} ${Number.isFinite(value) ? value : 0}`);
    }
  };
  const counts = store.countByState();
  metric("cxr_queue_depth", "gauge", "Jobs waiting to run.", [[{}, store.queuedCount()]]);
  metric(
    "cxr_jobs",
    "gauge",
    "Jobs by state.",
    JOB_STATES.map((state) => [{ state }, counts[state]]),
  );
  metric("cxr_images_generated_total", "counter", "Images generated and recorded.", [
    [{}, store.imageCount()],
  ]);
  metric("cxr_draining", "gauge", "1 while the server drains (SIGTERM).", [[{}, queue.draining ? 1 : 0]]);
  const kernels = sumProfiles(store.recentProfiles(1000).map((profile) => profile.rows));
  metric(
    "cxr_kernel_seconds_total",
    "counter",
    "GPU time by kernel and variant over the last 1000 profiled jobs.",
    kernels
      .filter((row) => row.milliseconds !== null)
      .map((row) => [{ kernel: row.name, variant: row.variant }, row.milliseconds! / 1000]),
  );
  metric(
    "cxr_kernel_calls_total",
    "counter",
    "Kernel dispatches by kernel and variant over the last 1000 profiled jobs.",
    kernels.map((row) => [{ kernel: row.name, variant: row.variant }, row.calls]),
  );
  return `${lines.join("\n")}\n`;
}

export interface KernelTotal {
  name: string;
  variant: string;
  calls: number;
  milliseconds: number | null;
  flops: number;
  bytes: number;
}

/** Sums profiler rows (`ProfileRow` of @cxr/kernels) per kernel and variant, slowest first. */
export function sumProfiles(profiles: unknown[][]): KernelTotal[] {
  const totals = new Map<string, KernelTotal>();
  for (const rows of profiles) {
    for (const raw of rows) {
      const row = raw as Partial<KernelTotal> & { name?: string; variant?: string };
      if (typeof row.name !== "string") continue;
      const key = `${row.name}\u0000${row.variant ?? ""}`;
      const total = totals.get(key) ?? {
        name: row.name,
        variant: row.variant ?? "",
        calls: 0,
        milliseconds: null,
        flops: 0,
        bytes: 0,
      };
      total.calls += row.calls ?? 0;
      total.flops += row.flops ?? 0;
      total.bytes += row.bytes ?? 0;
      if (typeof row.milliseconds === "number")
        total.milliseconds = (total.milliseconds ?? 0) + row.milliseconds;
      totals.set(key, total);
    }
  }
  return [...totals.values()].sort(
    (a, b) => (b.milliseconds ?? 0) - (a.milliseconds ?? 0) || b.calls - a.calls,
  );
}
