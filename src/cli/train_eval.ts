/**
 * `longtune train` and `longtune eval`: one method on one model outside a suite file. Both build a
 * one-method suite from their flags and go through the runner, so `train` writes exactly the state a
 * suite run would cache (and a later `bench` with the same settings reuses it), and `eval` of a
 * trained output evaluates that state without training again.
 *
 * `train` writes `<out>/trained.safetensors` (the adapter's parameters, and the whole weight table when
 * the method trains base tensors) and `<out>/train.json` (model and its hash, method, config, training
 * settings, seed, lengths, loss curve, throughput).
 */

import { type Command, InvalidArgumentError, Option } from "commander";
import { join } from "node:path";
import { z } from "zod";
import { BABI_TASK_NAMES } from "../data/babi.ts";
import { copyFile } from "node:fs/promises";
import { hashJson } from "../data/hash.ts";
import { writeFileAtomic } from "../data/layouts.ts";
import { RULER_TASK_NAMES } from "../data/ruler.ts";
import { getGpu } from "../gpu/device.ts";
import { expandSuite } from "../harness/cells.ts";
import { readJsonFile, validateWith } from "../harness/report_schema.ts";
import { loadModels, prepareGroup, runSuite, trainCachePath, type TrainOutcome } from "../harness/runner.ts";
import { parseSuite, type ResolvedSuite, resolveSuite } from "../harness/suite.ts";
import { METHODS } from "../methods/registry.ts";
import { reportSummary, runWithInterrupt } from "./bench.ts";
import { watchInterrupt } from "./data_run.ts";
import { InterruptedError, UsageError } from "./errors.ts";
import { parseLengths, parseNames, parseNumber, parseWholeNumber } from "./parse.ts";

function jsonObject(text: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new InvalidArgumentError("expected a JSON object, e.g. '{\"r\": 8}'");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new InvalidArgumentError("expected a JSON object, e.g. '{\"r\": 8}'");
  }
  return value as Record<string, unknown>;
}

function mixOption(text: string): { prose: number; ruler: number; babilong: number } {
  const mix = { prose: 0, ruler: 0, babilong: 0 };
  for (const part of text.split(",")) {
    const match = /^\s*(prose|ruler|babilong)\s*=\s*([0-9.]+)\s*$/.exec(part);
    if (match === null) {
      throw new InvalidArgumentError("expected kind=fraction pairs, e.g. prose=0.8,ruler=0.1,babilong=0.1");
    }
    mix[match[1] as keyof typeof mix] = Number(match[2]);
  }
  if (mix.prose + mix.ruler + mix.babilong <= 0) throw new InvalidArgumentError("the fractions sum to 0");
  return mix;
}

const methodNames = () => METHODS.map((m) => m.name).join(", ");

// ---------------------------------------------------------------------------------------------
// train

interface TrainOptions {
  model: string;
  method: string;
  config: Record<string, unknown>;
  steps: number;
  lr: number;
  length: number;
  batch: number;
  seed: number;
  prepareLength?: number;
  mix?: { prose: number; ruler: number; babilong: number };
  out: string;
  cache: string;
  quiet?: boolean;
}

/** The train.json `longtune train` writes next to trained.safetensors. */
export const trainRecordSchema = z.strictObject({
  format: z.literal("longtune-train"),
  groupKey: z.string(),
  model: z.strictObject({ name: z.string(), hash: z.string() }),
  /** The one-method suite the state belongs to (method, config, training settings, seed, lengths). */
  suite: z.record(z.string(), z.json()),
  trainableParameters: z.number(),
  outcome: z.record(z.string(), z.json()),
});

function oneMethodSuite(options: {
  name: string;
  model: string;
  method: { name: string; config: Record<string, unknown>; training?: Record<string, unknown> };
  seed: number;
  training: Record<string, unknown>;
  lengths: number[];
  prepareLength: number;
  samples: number;
  evaluations: Record<string, unknown>[];
  file: string;
}): ResolvedSuite {
  const suite = parseSuite({
    name: options.name,
    description: `longtune ${options.name}`,
    models: [options.model],
    seeds: [options.seed],
    lengths: options.lengths,
    prepareLength: options.prepareLength,
    samples: options.samples,
    training: options.training,
    methods: [{
      name: options.method.name,
      config: options.method.config,
      training: options.method.training ?? {},
    }],
    evaluations: options.evaluations,
  }, options.file);
  return resolveSuite(suite, options.file);
}

function registerTrain(program: Command): void {
  program
    .command("train")
    .description("train one method on one base model and write its trained state")
    .addOption(
      new Option("--model <name|path>", "shipped base model (gpt2-tiny, llama-tiny) or HF checkpoint folder")
        .default("llama-tiny"),
    )
    .addOption(new Option("--method <name>", `registry name (${methodNames()})`).makeOptionMandatory())
    .addOption(
      new Option("--config <json>", "the method's config as a JSON object").argParser(jsonObject).default({}),
    )
    .addOption(
      new Option("--steps <n>", "optimizer steps").argParser((t) => parseWholeNumber(t, 1)).default(20),
    )
    .addOption(
      new Option("--lr <rate>", "peak learning rate (constant schedule)").argParser((t) => parseNumber(t, 0))
        .default(1e-3),
    )
    .addOption(
      new Option("--length <T>", "tokens per training sequence").argParser((t) => parseWholeNumber(t, 2))
        .default(512),
    )
    .addOption(
      new Option("--batch <B>", "sequences per step").argParser((t) => parseWholeNumber(t, 1)).default(1),
    )
    .addOption(
      new Option("--seed <n>", "initialisation and data-order seed").argParser((t) => parseWholeNumber(t, 0))
        .default(0),
    )
    .addOption(
      new Option("--prepare-length <n>", "longest context the method is prepared for (default --length)")
        .argParser((t) => parseLengths(t, 1024, 16)[0]),
    )
    .addOption(
      new Option("--mix <fractions>", "training windows by kind, e.g. prose=0.8,ruler=0.1,babilong=0.1")
        .argParser(mixOption),
    )
    .addOption(
      new Option("--out <dir>", "folder for trained.safetensors and train.json").makeOptionMandatory(),
    )
    .addOption(
      new Option(
        "--cache <dir>",
        "the runner's cache (a later bench with these settings reuses the training)",
      ).default("out/cache"),
    )
    .addHelpText(
      "after",
      `
Example:
  longtune train --model llama-tiny --method lora --config '{"r": 8}' --steps 50 --length 512 --out out/lora-r8
  longtune eval --trained out/lora-r8 --wikitext --ruler niah_single_2 --lengths 512,2k --out out/lora-r8/eval`,
    )
    .action(async (_o: unknown, command: Command) => {
      const options = command.optsWithGlobals<TrainOptions>();
      if (!METHODS.some((m) => m.name === options.method)) {
        throw new UsageError(`--method ${options.method}: unknown method; known: ${methodNames()}`);
      }
      const prepareLength = options.prepareLength ?? options.length;
      const training: Record<string, unknown> = {
        steps: options.steps,
        lr: options.lr,
        batch: options.batch,
        sequenceLength: options.length,
      };
      if (options.mix !== undefined) training.data = { mix: options.mix };
      const suite = oneMethodSuite({
        name: "train",
        model: options.model,
        method: { name: options.method, config: options.config },
        seed: options.seed,
        training,
        lengths: [prepareLength],
        prepareLength,
        samples: 1,
        evaluations: [{ family: "wikitext" }],
        file: "--config/--steps/… flags",
      });
      const [model] = await loadModels(suite.models);
      const group = expandSuite(suite, [model.facts]).groups[0];
      if (!group.trains) {
        throw new UsageError(
          `--method ${options.method}: has no trainable parameters; there is nothing to train`,
        );
      }
      const gpu = await getGpu();
      const controller = new AbortController();
      const watch = watchInterrupt(() =>
        controller.abort(new InterruptedError("interrupted; nothing was written"))
      );
      let outcome: TrainOutcome | null;
      let trainable: number;
      try {
        const ready = await prepareGroup(gpu, model, group, {
          registry: METHODS,
          cache: options.cache,
          check: () => controller.signal.throwIfAborted(),
          log: (line) => options.quiet || console.log(line),
        });
        outcome = ready.outcome;
        trainable = ready.prepared.trainableParameters;
        ready.dispose();
      } finally {
        watch.dispose();
      }
      await Deno.mkdir(options.out, { recursive: true });
      await copyFile(trainCachePath(options.cache, group.key), join(options.out, "trained.safetensors"));
      const record: z.infer<typeof trainRecordSchema> = {
        format: "longtune-train",
        groupKey: group.key,
        model: { name: model.facts.name, hash: model.facts.hash },
        suite: JSON.parse(JSON.stringify({
          method: suite.methods[0],
          seed: options.seed,
          prepareLength,
        })),
        trainableParameters: trainable,
        outcome: JSON.parse(JSON.stringify(outcome)),
      };
      await writeFileAtomic(join(options.out, "train.json"), JSON.stringify(record, null, 2) + "\n");
      if (!options.quiet) {
        const last = outcome?.curve.at(-1);
        console.log(
          `wrote ${
            join(options.out, "trained.safetensors")
          } and train.json (${trainable} trainable parameters, ` +
            `final loss ${last?.loss.toFixed(4) ?? "–"})`,
        );
      }
    });
}

// ---------------------------------------------------------------------------------------------
// eval

interface EvalOptions {
  model?: string;
  trained?: string;
  method: string;
  config: Record<string, unknown>;
  wikitext?: boolean;
  pg19?: boolean;
  ruler?: string[];
  babilong?: string[];
  babilongPrompt: boolean;
  sweep?: boolean;
  lengths: number[];
  samples: number;
  dataSeed: number;
  out: string;
  cache: string;
  quiet?: boolean;
}

function registerEval(program: Command): void {
  program
    .command("eval")
    .description("evaluate a base model, an untrained method, or a `longtune train` output on chosen tasks")
    .addOption(
      new Option(
        "--model <name|path>",
        "shipped base model or HF checkpoint folder (default: the trained output's, else llama-tiny)",
      ),
    )
    .addOption(
      new Option("--trained <dir>", "a `longtune train` output folder (trained.safetensors + train.json)"),
    )
    .addOption(
      new Option("--method <name>", "without --trained: a method evaluated as prepared, untrained").default(
        "baseline",
      ),
    )
    .addOption(
      new Option("--config <json>", "without --trained: the method's config").argParser(jsonObject).default(
        {},
      ),
    )
    .addOption(new Option("--wikitext", "WikiText perplexity (fixture test split, sliding window, stride ½)"))
    .addOption(new Option("--pg19", "PG-19 perplexity (fixture test split, sliding window, stride ½)"))
    .addOption(
      new Option("--ruler <tasks>", `RULER tasks, comma-separated (${RULER_TASK_NAMES.join(", ")})`)
        .argParser((t) => parseNames(t, RULER_TASK_NAMES, "RULER task")),
    )
    .addOption(
      new Option("--babilong <tasks>", "BABILong tasks, comma-separated (qa1…qa20)")
        .argParser((t) => parseNames(t, BABI_TASK_NAMES, "bAbI task")),
    )
    .addOption(
      new Option(
        "--no-babilong-prompt",
        "BABILong without instruction, examples and post-prompt (the tiny models' format)",
      ),
    )
    .addOption(new Option("--sweep", "a needle position sweep over depths 0, 0.25, 0.5, 0.75, 1"))
    .addOption(
      new Option("--lengths <list>", "context lengths, comma-separated; 2k means 2048")
        .argParser((t) => parseLengths(t, 1024, 16)).makeOptionMandatory(),
    )
    .addOption(
      new Option("--samples <n>", "samples per cell").argParser((t) => parseWholeNumber(t, 1)).default(5),
    )
    .addOption(
      new Option("--data-seed <n>", "seed of every evaluation sample").argParser((t) =>
        parseWholeNumber(t, 0)
      ).default(42),
    )
    .addOption(new Option("--out <dir>", "folder for report.json/.md/.html").makeOptionMandatory())
    .addOption(new Option("--cache <dir>", "the runner's cache").default("out/cache"))
    .addHelpText(
      "after",
      `
Examples:
  longtune eval --model llama-tiny --wikitext --pg19 --lengths 512,2k,8k --out out/base-ppl
  longtune eval --trained out/lora-r8 --ruler niah_single_2 --babilong qa1,qa2 --no-babilong-prompt \\
    --lengths 512,2k --samples 10 --out out/lora-r8/eval`,
    )
    .action(async (_o: unknown, command: Command) => {
      const options = command.optsWithGlobals<EvalOptions>();
      const evaluations: Record<string, unknown>[] = [];
      if (options.wikitext) evaluations.push({ family: "wikitext" });
      if (options.pg19) evaluations.push({ family: "pg19" });
      if (options.ruler) evaluations.push({ family: "ruler", tasks: options.ruler });
      if (options.babilong) {
        const off = { instruction: false, examples: false, postPrompt: false };
        evaluations.push({
          family: "babilong",
          tasks: options.babilong,
          ...(options.babilongPrompt ? {} : { prompt: off }),
        });
      }
      if (options.sweep) evaluations.push({ family: "position-sweep" });
      if (evaluations.length === 0) {
        throw new UsageError(
          "choose at least one evaluation: --wikitext, --pg19, --ruler, --babilong or --sweep",
        );
      }
      let suite: ResolvedSuite;
      let trainedFile: string | null = null;
      let trainedKey: string | null = null;
      if (options.trained !== undefined) {
        const recordPath = join(options.trained, "train.json");
        const record = validateWith(
          trainRecordSchema,
          await readJsonFile(recordPath),
          recordPath,
          "longtune train record",
        );
        const stored = record.suite as unknown as {
          method: ResolvedSuite["methods"][number];
          seed: number;
          prepareLength: number;
        };
        suite = oneMethodSuite({
          name: "eval",
          model: options.model ?? record.model.name,
          method: {
            name: stored.method.name,
            config: stored.method.config,
            training: stored.method.training,
          },
          seed: stored.seed,
          training: stored.method.training,
          lengths: options.lengths,
          prepareLength: stored.prepareLength,
          samples: options.samples,
          evaluations,
          file: recordPath,
        });
        trainedFile = join(options.trained, "trained.safetensors");
        trainedKey = record.groupKey;
      } else {
        suite = oneMethodSuite({
          name: "eval",
          model: options.model ?? "llama-tiny",
          method: { name: options.method, config: options.config },
          seed: 0,
          training: { steps: 0, lr: 1e-3, sequenceLength: options.lengths[0] },
          lengths: options.lengths,
          prepareLength: Math.max(...options.lengths),
          samples: options.samples,
          evaluations,
          file: "--method/--config flags",
        });
      }
      suite = { ...suite, dataSeed: options.dataSeed };
      if (trainedFile !== null) {
        // The trained state goes where the runner looks for it; the keys must agree.
        const [model] = await loadModels(suite.models);
        const group = expandSuite(suite, [model.facts]).groups[0];
        if (group.key !== trainedKey) {
          throw new UsageError(
            `--trained ${options.trained}: made for group ${trainedKey}, but this code and model give ${group.key} ` +
              `(a different model, a changed method, or another longtune version); train it again`,
          );
        }
        await Deno.mkdir(join(options.cache, "train"), { recursive: true });
        await copyFile(trainedFile, trainCachePath(options.cache, group.key));
      }
      const summary = await runWithInterrupt(
        (signal) =>
          runSuite({
            suite,
            // No suite file: the flags' resolved suite stands in for its bytes.
            suiteFile: { path: options.trained ?? "(eval flags)", fileHash: hashJson(suite) },
            out: options.out,
            cache: options.cache,
            signal,
            quiet: options.quiet,
          }),
        options.cache,
      );
      reportSummary(summary, options.quiet ?? false);
    });
}

/** Registers `train` and `eval` on the program. */
export function registerTrainEval(program: Command): void {
  registerTrain(program);
  registerEval(program);
}
