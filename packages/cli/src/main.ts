#!/usr/bin/env bun
import { buildProgram } from "./program.ts";

const program = buildProgram();
try {
  await program.parseAsync(process.argv);
} catch (error) {
  console.error(`cxr: ${error instanceof Error ? error.message : String(error)}`);
  process.exitCode = 1;
}
