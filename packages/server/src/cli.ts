import { type Command, InvalidArgumentError } from "commander";
import { readTokenFile } from "./auth.ts";
import { DEFAULT_LIMITS } from "./config.ts";
import { startModelServer } from "./serve.ts";

interface ServeFlags {
  port: number;
  host: string;
  dataRoot: string;
  models?: string;
  datasets?: string;
  defaultModel?: string;
  tokenFile?: string;
  cors?: string;
  maxQueue: number;
}

function parseInteger(name: string, min: number, max: number) {
  return (text: string): number => {
    const value = Number(text);
    if (!Number.isInteger(value) || value < min || value > max) {
      throw new InvalidArgumentError(`${name} must be an integer in [${min}, ${max}]`);
    }
    return value;
  };
}

/** `cxr serve` (and, through `groups.bench`, `cxr bench server`). */
export function registerCommands(program: Command, _groups: { bench: Command }): void {
  program
    .command("serve")
    .description(
      "serve generation and training over HTTP (JSON API under /v1, web page at /, OpenAPI at /openapi.json)",
    )
    .option("--port <port>", "TCP port (0: any free one)", parseInteger("--port", 0, 65535), 8787)
    .option("--host <address>", "address to bind; anything but loopback exposes the server", "127.0.0.1")
    .option("--data-root <dir>", "jobs database, images, trainings", "runs/server")
    .option("--models <dir>", "models root: models are named by their folder here (default DATA_ROOT/models)")
    .option("--datasets <dir>", "datasets root (default DATA_ROOT/datasets)")
    .option(
      "--default-model <name>",
      "model used when a request names none (default: the first under --models)",
    )
    .option(
      "--token-file <file>",
      "bearer tokens, one a line; without it the API is open (keep it on loopback)",
    )
    .option("--cors <origins>", "comma-separated origins allowed by CORS (default: CORS off)")
    .option(
      "--max-queue <n>",
      "queued jobs before 429",
      parseInteger("--max-queue", 1, 100_000),
      DEFAULT_LIMITS.maxQueueDepth,
    )
    .action(async (flags: ServeFlags) => {
      const tokens = flags.tokenFile ? readTokenFile(flags.tokenFile) : [];
      const server = await startModelServer({
        dataRoot: flags.dataRoot,
        modelsRoot: flags.models,
        datasetsRoot: flags.datasets,
        defaultModel: flags.defaultModel,
        port: flags.port,
        host: flags.host,
        tokens,
        corsOrigins: flags.cors
          ? flags.cors
              .split(",")
              .map((origin) => origin.trim())
              .filter(Boolean)
          : [],
        limits: { ...DEFAULT_LIMITS, maxQueueDepth: flags.maxQueue },
      });
      console.log(`cxr serve: ${server.url}  (web page ${server.url}/, API reference ${server.url}/docs)`);
      if (tokens.length === 0)
        console.log("cxr serve: no --token-file: the API is open to anyone who can reach it");
      let stopping = false;
      const stop = (signal: string) => {
        if (stopping) return;
        stopping = true;
        console.log(`cxr serve: ${signal}: draining (no new work; the running job stops at its next step)`);
        server.close().then(
          () => process.exit(0),
          (error) => {
            console.error(`cxr serve: drain failed: ${(error as Error).message}`);
            process.exit(1);
          },
        );
      };
      process.on("SIGTERM", () => stop("SIGTERM"));
      process.on("SIGINT", () => stop("SIGINT"));
    });
}
