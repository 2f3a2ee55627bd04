/**
 * The generator worker of `longtune data`. Generation is synchronous CPU work (one RULER file can take
 * minutes with a BPE tokenizer), so it runs here, off the main thread: the main thread stays free to
 * draw the progress bar and to answer Ctrl-C at once by terminating this worker, and it alone writes
 * files, so an interrupt never leaves a file half-written.
 *
 * Protocol: the first message is a `WorkerInit`; every later one a `GeneratorRequest`, answered by any
 * number of `progress` messages and then one `result` or `error`.
 */

import { loadTokenizer } from "../data/tokenizers.ts";
import type { Tokenizer } from "../data/tokenizer.ts";
import {
  babilongFileText,
  corpusSplits,
  type GeneratorRequest,
  rulerFileText,
  type RulerTextSources,
} from "./data_content.ts";
import type { WorkerInit, WorkerReply } from "./data_run.ts";

// Deno type-checks this file with the window globals; these are the worker-scope members it uses.
const scope = self as unknown as {
  postMessage(message: WorkerReply): void;
  onmessage: ((event: MessageEvent) => void) | null;
};

let tokenizer: Promise<Tokenizer> | undefined;
let rulerSources: RulerTextSources | undefined;

async function answer(request: GeneratorRequest): Promise<WorkerReply> {
  if (request.job === "corpus") return { type: "result", corpus: corpusSplits(request) };
  const tok = await tokenizer!;
  if (request.job === "ruler") {
    const text = rulerFileText(request, tok, rulerSources!);
    scope.postMessage({ type: "progress", samples: request.samples });
    return { type: "result", text };
  }
  const text = babilongFileText(request, tok, () => scope.postMessage({ type: "progress", samples: 1 }));
  return { type: "result", text };
}

scope.onmessage = async (event: MessageEvent) => {
  const message = event.data as WorkerInit | GeneratorRequest;
  if ("init" in message) {
    tokenizer = loadTokenizer(message.init.tokenizer);
    // A load failure is reported with the first request that needs the tokenizer.
    tokenizer.catch(() => {});
    rulerSources = message.init.ruler;
    return;
  }
  try {
    scope.postMessage(await answer(message));
  } catch (error) {
    const e = error instanceof Error ? error : new Error(String(error));
    scope.postMessage({ type: "error", name: e.name, message: e.message, stack: e.stack ?? "" });
  }
};
