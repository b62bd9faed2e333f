import { join, resolve } from "node:path";
import { type Command, InvalidArgumentError, Option } from "commander";
import { readTokenFile } from "./auth.ts";
import { benchServer, formatServerBench } from "./bench.ts";
import { DEFAULT_LIMITS, PRECISIONS, type Precision } from "./config.ts";
import { DiffusionGenerator } from "./diffusion-generator.ts";
import { SAMPLERS, type SamplerName } from "./generation.ts";
import { DEFAULT_LOCK_MS, redisConnection, startJobWorker, WORKER_KIND_NAMES } from "./redis.ts";
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
  queue?: string;
  precision: Precision;
  queuePrefix: string;
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
export function registerCommands(program: Command, groups: { bench: Command }): void {
  groups.bench
    .command("server")
    .description("N concurrent generation requests over loopback HTTP next to the same images in-process")
    .option("--requests <n>", "concurrent requests (one image each)", parseInteger("--requests", 1, 1000), 16)
    .option("--steps <n>", "sampler steps per image", parseInteger("--steps", 1, 1000), 10)
    .option("--sampler <name>", "ddpm, ddim, pndm or dpmpp-2m", "ddim")
    .option(
      "--model-dir <dir>",
      "model folder (default models/phantom-diffusion, else an untrained --config)",
    )
    .option("--config <name>", "configuration of the untrained stand-in", "phantom-small")
    .option("--json", "print the figures as JSON")
    .action(
      async (flags: {
        requests: number;
        steps: number;
        sampler: string;
        modelDir?: string;
        config: string;
        json?: boolean;
      }) => {
        if (!(SAMPLERS as readonly string[]).includes(flags.sampler)) {
          throw new InvalidArgumentError(`--sampler must be one of ${SAMPLERS.join(", ")}`);
        }
        const result = await benchServer({ ...flags, sampler: flags.sampler as SamplerName });
        console.log(flags.json ? JSON.stringify(result, null, 2) : formatServerBench(result));
        if (result.lost > 0) process.exitCode = 1;
      },
    );

  program
    .command("worker")
    .description(
      "run jobs from a Redis queue (BullMQ): generations, trainings, evaluations and generation-batch shards, writing under the shared data root",
    )
    .requiredOption("--queue <url>", "redis://HOST:PORT (the one `cxr serve --queue` uses)")
    .option(
      "--data-root <dir>",
      "data root shared with the API server (images, trainings, evaluations)",
      "runs/server",
    )
    .option("--models <dir>", "models root (default DATA_ROOT/models)")
    .option("--datasets <dir>", "datasets root (default DATA_ROOT/datasets)")
    .option(
      "--kinds <list>",
      "comma-separated: generation, training, evaluation, shard",
      "generation,training,evaluation,shard",
    )
    .option("--prefix <name>", "BullMQ key prefix (the API server's)", "bull")
    .option(
      "--lock-seconds <s>",
      `lock duration of trainings (default ${DEFAULT_LOCK_MS.training / 1000}; others ${DEFAULT_LOCK_MS.generation / 1000})`,
      parseInteger("--lock-seconds", 5, 86_400),
    )
    .action(
      async (flags: {
        queue: string;
        dataRoot: string;
        models?: string;
        datasets?: string;
        kinds: string;
        prefix: string;
        lockSeconds?: number;
      }) => {
        redisConnection(flags.queue);
        const kinds = flags.kinds
          .split(",")
          .map((name) => name.trim())
          .filter(Boolean)
          .map((name) => {
            const kind = WORKER_KIND_NAMES[name];
            if (!kind)
              throw new InvalidArgumentError(
                `--kinds: "${name}" is not one of ${Object.keys(WORKER_KIND_NAMES).join(", ")}`,
              );
            return kind;
          });
        if (kinds.length === 0) throw new InvalidArgumentError("--kinds: name at least one kind");
        const dataRoot = resolve(flags.dataRoot);
        const modelsRoot = resolve(flags.models ?? join(dataRoot, "models"));
        const datasetsRoot = resolve(flags.datasets ?? join(dataRoot, "datasets"));
        const generator = new DiffusionGenerator({ modelsRoot });
        const running = await startJobWorker({
          queueUrl: flags.queue,
          prefix: flags.prefix,
          kinds,
          dataRoot,
          modelsRoot,
          datasetsRoot,
          generator,
          gpu: () => generator.device(),
          lockDurationMs: flags.lockSeconds ? { training: flags.lockSeconds * 1000 } : undefined,
        });
        console.log(
          `cxr worker: ${kinds.join(", ")} from ${flags.queue}; data root ${dataRoot}, models ${modelsRoot}, datasets ${datasetsRoot}`,
        );
        let stopping = false;
        const stop = () => {
          if (stopping) return;
          stopping = true;
          console.log(
            "cxr worker: stopping (the running job stops at its next step and goes back to its queue)",
          );
          running.close().then(
            () => process.exit(0),
            (error) => {
              console.error(`cxr worker: stop failed: ${(error as Error).message}`);
              process.exit(1);
            },
          );
        };
        process.on("SIGTERM", stop);
        process.on("SIGINT", stop);
      },
    );
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
      "--queue <url>",
      "redis://HOST:PORT: generations, trainings, evaluations and batch shards go to BullMQ there, for cxr worker processes",
    )
    .option("--queue-prefix <name>", "BullMQ key prefix on that Redis", "bull")
    .addOption(
      new Option(
        "--precision <p>",
        "default precision of generation requests that name none: f32, or f16 (the f16 kernels; needs the adapter's shader-f16, checked at start)",
      )
        .choices(PRECISIONS)
        .default("f32"),
    )
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
        queueUrl: flags.queue,
        defaultPrecision: flags.precision,
        queuePrefix: flags.queuePrefix,
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
