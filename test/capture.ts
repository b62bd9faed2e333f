/**
 * What a command run in this process prints: stdout writes and console.log lines, collected while
 * `run` runs (stderr silenced when asked), restored afterwards even when `run` throws.
 */
import { vi } from "vitest";

export async function captureOutput<T>(
  run: () => Promise<T>,
  options: { quietStderr?: boolean } = {},
): Promise<{ result: T; text: string }> {
  const lines: string[] = [];
  const write = vi.spyOn(process.stdout, "write").mockImplementation((chunk: string | Uint8Array) => {
    lines.push(String(chunk));
    return true;
  });
  const log = vi.spyOn(console, "log").mockImplementation((...items: unknown[]) => {
    lines.push(`${items.join(" ")}\n`);
  });
  const stderr = options.quietStderr
    ? vi.spyOn(process.stderr, "write").mockImplementation(() => true)
    : null;
  try {
    const result = await run();
    return { result, text: lines.join("") };
  } finally {
    write.mockRestore();
    log.mockRestore();
    stderr?.mockRestore();
  }
}
