/**
 * longtune: a reproducible benchmark harness for parameter-efficient and long-context fine-tuning,
 * with every kernel written in WGSL and run through Deno's WebGPU.
 *
 * This module is the public API. Everything exported here is documented; nothing else is public.
 *
 * @example
 * ```ts
 * import { getGpu, Recorder, createTensor, readF32 } from "./mod.ts";
 * const gpu = await getGpu();
 * console.log(gpu.adapter.description);
 * ```
 * @module
 */

export { type AdapterDescription, getGpu, type Gpu, GpuError, NoGpuError } from "./src/gpu/device.ts";
export { type Kernel, kernel, kernelSource, type KernelSpec } from "./src/gpu/kernel.ts";
export { type DispatchSpec, f32, i32, Recorder, type Uniform } from "./src/gpu/recorder.ts";
export {
  BufferPool,
  createTensor,
  type DType,
  numel,
  poison,
  readF32,
  readTensors,
  type Tensor,
  tensorFrom,
  upload,
} from "./src/gpu/tensor.ts";
export { fillNormal, fillUniform, philox4x32, Rng } from "./src/random/philox.ts";
export { fillNormal as fillNormalGpu, fillUniform as fillUniformGpu } from "./src/ops/random.ts";

// Kernel launchers: elementwise, reductions, layers, loss, optimizer, RoPE.
export { add, axpy, fill, mul, scale } from "./src/ops/elementwise.ts";
export { reduceFull, rowReduce } from "./src/ops/reduce.ts";
export { bucketTokens, encoderBackward, encoderForward, type TokenBuckets } from "./src/ops/encoder.ts";
export { layernormBackward, layernormForward, rmsnormBackward, rmsnormForward } from "./src/ops/norm.ts";
export { geluBackward, geluForward, swigluBackward, swigluForward } from "./src/ops/activation.ts";
export {
  checkTargets,
  crossEntropy,
  crossEntropyInPlace,
  crossEntropyLossSum,
  IGNORE_INDEX,
} from "./src/ops/crossentropy.ts";
export {
  adamw,
  type AdamWConfig,
  adamwConfigSchema,
  createAdamWStep,
  createAdamWTable,
  writeAdamWStep,
} from "./src/ops/adamw.ts";
export { ropeBackward, ropeForward, uploadRopeTables } from "./src/ops/rope.ts";

// Models.
export {
  dims,
  type Gpt2Config,
  type LlamaConfig,
  type ModelConfig,
  modelConfigSchema,
  type ModelDims,
  parseModelConfig,
} from "./src/model/config.ts";
export { decays, type ParamEntry, parameterCount, type ParamTable, paramTable } from "./src/model/params.ts";
export {
  ropeFrequencies,
  type RopeScalingConfig,
  ropeScalingConfigSchema,
  ropeTables,
} from "./src/model/rope_scaling.ts";

// Data: corpora, real-file loaders, bAbI/BABILong, RULER.
export type { Tokenizer } from "./src/data/tokenizer.ts";
export { canonicalJson, hashJson, sha256 } from "./src/data/hash.ts";
export { corpusText, generateCorpus, haystackSentences } from "./src/data/corpus.ts";
export { writeFileAtomic, writePg19, writeWikiText } from "./src/data/layouts.ts";
export { DataFileError, loadBabilong, loadPg19, loadRuler, loadWikiText } from "./src/data/loaders.ts";
export { BABI_TASK_NAMES, BABI_TASKS, type BabiSample, generateBabi } from "./src/data/babi.ts";
export {
  babilongOfficialCorrect,
  babilongPrompt,
  babilongWholeWordCorrect,
  makeBabilongSample,
} from "./src/data/babilong.ts";
export {
  aggregateRuler,
  generateRuler,
  loadHotpotQa,
  loadRulerTemplates,
  loadSquadQa,
  RULER_TASK_NAMES,
  RULER_TASKS,
  type RulerSample,
  scoreRulerTask,
} from "./src/data/ruler.ts";

// Checkpoints and tokenizers.
export {
  openSafetensors,
  readSafetensors,
  type SafeTensor,
  writeSafetensors,
} from "./src/model/safetensors.ts";
export { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from "./src/model/dtypes.ts";
export { byteTokenizer, loadGpt2Tokenizer, loadHfTokenizer, loadTokenizer } from "./src/data/tokenizers.ts";

// Matmul.
export { chooseMatmulPath, matmul, type MatmulOptions, type MatmulPath } from "./src/ops/matmul.ts";

// Evaluation: perplexity protocols, position sweeps, intervals.
export {
  aggregatePerplexity,
  evaluatePerplexity,
  type LogProbScorer,
  perplexityProtocolSchema,
  scoreDocument,
} from "./src/eval/perplexity.ts";
export { generatePositionSweep, scorePositionSweep } from "./src/eval/sweeps.ts";
export { bootstrapInterval, meanInterval, summarizeMetric, wilsonInterval } from "./src/eval/stats.ts";

// Reports, regression tracking, leaderboard.
export {
  type Cell,
  parseReport,
  type Report,
  REPORT_SCHEMA_VERSION,
  reportHash,
  reportSchema,
  SchemaValidationError,
  writeReport,
} from "./src/harness/report_schema.ts";
export { captureEnvironment } from "./src/harness/environment.ts";
export { renderMarkdown } from "./src/harness/render_md.ts";
export { renderHtml } from "./src/harness/render_html.ts";
export { renderReportFiles } from "./src/harness/render_report.ts";
export {
  compareReports,
  type CompareRules,
  type Comparison,
  DEFAULT_COMPARE_RULES,
  formatComparisonMarkdown,
  formatComparisonText,
} from "./src/harness/compare.ts";
export {
  loadHistory,
  recordHistory,
  toBencherMetricFormat,
  toGithubActionBenchmark,
} from "./src/harness/history.ts";
export {
  buildLeaderboard,
  IncomparableReportsError,
  type Leaderboard,
  leaderboardSchema,
  parseLeaderboard,
  writeLeaderboard,
} from "./src/harness/leaderboard.ts";

// Flash-style attention (forward, three-kernel backward, per-head mask modes) and head layout.
export {
  attentionBackward,
  type AttentionBackwardInputs,
  type AttentionBackwardOptions,
  attentionForward,
  type AttentionGrads,
  type AttentionInputs,
  type AttentionMask,
  type AttentionMode,
  type AttentionOptions,
  type AttentionOutputs,
  type AttentionScratch,
  attentionTiling,
  EMPTY_ROW_LSE,
  headModes,
  type LayerMaskMode,
  MAX_HEAD_SIZE,
  TOKEN_PAD,
  TOKEN_RESPONSE,
} from "./src/ops/attention.ts";
export { mergeHeads, mergeHeadsBackward, splitHeads, splitHeadsBackward } from "./src/ops/heads.ts";

// LoRaDA's low-rank attention map (an UNVERIFIED reconstruction, methods spec §6).
export {
  LOWRANK_CHUNK,
  lowrankAttentionBackward,
  lowrankAttentionForward,
  type LowrankAttentionShape,
} from "./src/ops/lowrank_attention.ts";

// Models, training and checkpoints.
export {
  createGraph,
  destroyGraph,
  type Graph,
  type GraphOptions,
  recordBackward,
  recordForward,
} from "./src/model/model.ts";
export { createWeights, initialWeights, type ModelWeights, readWeights } from "./src/model/weights.ts";
export { configFromHf, configToHf, loadHfCheckpoint, writeHfCheckpoint } from "./src/model/hf.ts";
export { type HostBatch, Trainer, type TrainerOptions } from "./src/train/trainer.ts";
export { allocatedBytes } from "./src/gpu/tensor.ts";

// The longtune command and the dataset manifests it writes.
export { buildProgram, main as runLongtune } from "./src/cli/main.ts";
export {
  type DatasetManifest,
  datasetManifestSchema,
  readManifest as readDatasetManifest,
} from "./src/cli/data_run.ts";
export { RulerLengthError, rulerMinimumLength } from "./src/data/ruler.ts";

// Fine-tuning methods: how they attach, the registry, and the pieces methods share.
export {
  type Adapter,
  type AdapterHooks,
  ALL_BASE,
  type AttachContext,
  type BaseTrainable,
  type LinearName,
  type LinearSite,
  NO_BASE,
} from "./src/model/adapter.ts";
export type { Method, PrepareContext, PreparedMethod } from "./src/methods/method.ts";
export { getMethod, METHODS } from "./src/methods/registry.ts";
export {
  createLoraAdapter,
  type LoraConfig,
  loraConfigSchema,
  loraParameterCount,
  mergeLora,
} from "./src/methods/lora.ts";
export { solveBudget } from "./src/methods/hybrid_budget.ts";
export { createFocusftTrainer } from "./src/methods/focusft.ts";
export { attentionDiagnostics } from "./src/eval/diagnostics.ts";
export { createGenerator } from "./src/eval/generate.ts";
export { createScorer } from "./src/eval/scorer.ts";
export { loadBaseModel } from "./src/harness/base_models.ts";
