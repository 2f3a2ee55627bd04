/**
 * Captures the facts that decide whether two reports' numbers can be compared: the Deno, V8 and
 * TypeScript versions, the host, the WebGPU adapter, and the git state. Never throws: anything that is
 * unreadable (no permission, no git, not Linux) is recorded as "unknown" so a benchmark run is not lost
 * for want of metadata.
 */

import type { AdapterDescription } from "../gpu/device.ts";
import type { AdapterInfo, Environment } from "./report_schema.ts";
import denoConfig from "../../deno.json" with { type: "json" };

/** Options for `captureEnvironment`. */
export interface CaptureOptions {
  /** Folder whose git state is recorded; defaults to the current directory. */
  cwd?: string;
  /** Fixed timestamp, for reproducible test fixtures. */
  now?: Date;
}

/** Records the runtime, host, adapter and git state; fields it cannot read become "unknown". */
export async function captureEnvironment(
  adapter?: AdapterDescription,
  options: CaptureOptions = {},
): Promise<Environment> {
  const [cpuModel, git] = await Promise.all([readCpuModel(), readGitState(options.cwd)]);
  return {
    harness: { name: "longtune", version: denoConfig.version },
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    typescript: Deno.version.typescript,
    os: Deno.build.os,
    arch: Deno.build.arch,
    target: Deno.build.target,
    cpu: { model: cpuModel, logicalCores: Math.max(1, navigator.hardwareConcurrency || 1) },
    memoryBytes: readMemoryBytes(),
    adapter: adapter === undefined ? null : adapterInfo(adapter),
    git,
    capturedAt: (options.now ?? new Date()).toISOString(),
  };
}

/** Copies the fields of an adapter description that a report keeps (plain arrays and records). */
export function adapterInfo(adapter: AdapterDescription): AdapterInfo {
  return {
    description: adapter.description,
    vendor: adapter.vendor,
    architecture: adapter.architecture,
    device: adapter.device,
    isFallbackAdapter: adapter.isFallbackAdapter,
    features: [...adapter.features].sort(),
    limits: Object.fromEntries(Object.entries(adapter.limits).sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)),
    subgroupSizes: adapter.subgroupSizes,
  };
}

function readMemoryBytes(): number | "unknown" {
  try {
    return Deno.systemMemoryInfo().total;
  } catch {
    // Needs --allow-sys; without it the report still stands.
    return "unknown";
  }
}

async function readCpuModel(): Promise<string> {
  try {
    const cpuinfo = await Deno.readTextFile("/proc/cpuinfo");
    const line = cpuinfo.split("\n").find((entry) => /^(model name|Hardware|Processor)\s*:/.test(entry));
    const model = line?.slice(line.indexOf(":") + 1).trim();
    return model ? model : "unknown";
  } catch {
    return "unknown";
  }
}

async function runGit(args: string[], cwd?: string): Promise<string | undefined> {
  try {
    const output = await new Deno.Command("git", {
      args,
      cwd,
      stdout: "piped",
      stderr: "null",
      // `git status` would otherwise take the index lock to refresh stat data, racing other git users.
      env: { GIT_OPTIONAL_LOCKS: "0" },
    }).output();
    return output.success ? new TextDecoder().decode(output.stdout) : undefined;
  } catch {
    return undefined;
  }
}

/** Reads HEAD, the branch and whether the tree differs from HEAD; "unknown" for what git cannot say. */
export async function readGitState(cwd?: string): Promise<Environment["git"]> {
  const [head, branch, status] = await Promise.all([
    runGit(["rev-parse", "HEAD"], cwd),
    runGit(["rev-parse", "--abbrev-ref", "HEAD"], cwd),
    runGit(["status", "--porcelain"], cwd),
  ]);
  const commit = head?.trim() ?? "";
  return {
    commit: /^[0-9a-f]{40}([0-9a-f]{24})?$/.test(commit) ? commit : "unknown",
    branch: branch?.trim() || "unknown",
    dirty: status === undefined ? "unknown" : status.trim().length > 0,
  };
}
