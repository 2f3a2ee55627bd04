/**
 * Several adapters as one, for methods that stack their own tensors on another method's (LoRaDA on top
 * of LoRA). The graph and the Trainer see ONE adapter: one parameter table, one params buffer, one
 * gradient buffer and one set of AdamW moments. Each part keeps its own table, laid out at an aligned
 * offset of the combined one under its name as a prefix ("lora.h.0.q.lora.A", "lorada.h.0.attn.lorada.U"),
 * and attaches to views of the combined params and gradients at that offset, so it never knows it is
 * composed.
 *
 * Hooks chain: forward hooks (linear, finalNorm) in the parts' order, backward hooks in reverse. At most
 * one part may supply attention parameters and at most one may replace the head merge (mixOutput): a
 * second would overwrite the first's, so such compositions are refused when they attach.
 */
import type { Gpu } from "../gpu/device.ts";
import { type Tensor, tensorFrom } from "../gpu/tensor.ts";
import type { Adapter, AdapterGroup, AdapterHooks, AttachContext } from "../model/adapter.ts";
import type { ModelConfig } from "../model/config.ts";
import { buildTable, type ParamEntry, type ParamTable } from "../model/params.ts";
import {
  initLoraA,
  type LoraConfig,
  loraHooks,
  loraMatrices,
  type LoraMatrix,
  loraScale,
  loraSpecs,
} from "./lora.ts";

/** An adapter that runs on parameters it does not own: what `composeAdapters` takes. */
export interface AdapterPart {
  /** The part's name; its tensors' prefix in a composition. */
  readonly name: string;
  readonly table: ParamTable;
  /** Initial values (the part's table layout). */
  readonly values: Float32Array;
  /**
   * The part's hooks on one graph: it reads its tensors from `params` and writes gradients into
   * `ctx.grads`, both in its own table layout (views into the combined buffers).
   */
  attach(ctx: AttachContext, params: Tensor): AdapterHooks;
  /** Optimizer multipliers of one of its tensors (its own entry, unprefixed). */
  group?(entry: ParamEntry): AdapterGroup;
  /** False when its hooks break decoding with a KV cache (see Adapter.incremental). */
  incremental?: boolean;
}

/** Where a part lives in a composition. */
export interface ComposedPart {
  part: AdapterPart;
  /** First element of its table in the combined one (a multiple of PARAM_ALIGN). */
  offset: number;
  /** "" or "name." before each of its tensor names. */
  prefix: string;
}

/** The composed adapter and what tests and reports read from it. */
export interface ComposedAdapter extends Adapter {
  readonly params: Tensor;
  readonly parts: readonly ComposedPart[];
  /** Initial values of the combined table. */
  readonly values: Float32Array;
  /** Part `index`'s table inside a buffer in the combined layout (params, gradients, moments). */
  partView(flat: Tensor, index: number): Tensor;
  /** Frees the params buffer. */
  destroy(): void;
}

/**
 * One adapter from `parts`, their tables concatenated (names prefixed with "part." unless
 * `prefix: false`, which a single part uses to keep its own names) and their values in one buffer.
 * @example const adapter = composeAdapters(gpu, "lorada", [loraPart(gpu, model, loraConfig, seed), loradaPart]);
 */
export function composeAdapters(
  gpu: Gpu,
  name: string,
  parts: readonly AdapterPart[],
  opts: { prefix?: boolean } = {},
): ComposedAdapter {
  if (parts.length === 0) throw new RangeError(`composeAdapters(${name}): no parts`);
  const usePrefix = opts.prefix ?? true;
  const names = parts.map((p) => p.name);
  if (usePrefix && new Set(names).size !== names.length) {
    throw new RangeError(`composeAdapters(${name}): part names [${names.join(", ")}] must differ`);
  }
  // One table: each part's entries, in its own order, as a run that starts on an aligned offset. Aligned
  // entries of an aligned run keep their relative offsets, which the check below confirms.
  const prefixes = parts.map((p) => (usePrefix ? `${p.name}.` : ""));
  const table = buildTable(
    parts.flatMap((p, k) =>
      p.table.entries.map((e) => ({
        name: prefixes[k] + e.name,
        shape: e.shape,
        role: e.role,
        layer: e.layer,
      }))
    ),
  );
  if (table.size === 0) throw new RangeError(`composeAdapters(${name}): the parts have no tensors`);
  const composed: ComposedPart[] = [];
  const owner = new Map<string, { part: AdapterPart; entry: ParamEntry }>();
  for (const [k, part] of parts.entries()) {
    const first = part.table.entries[0];
    const offset = first ? table.byName.get(prefixes[k] + first.name)!.offset - first.offset : 0;
    for (const e of part.table.entries) {
      const mine = table.byName.get(prefixes[k] + e.name)!;
      if (mine.offset !== offset + e.offset) {
        throw new Error(
          `composeAdapters(${name}): ${e.name} of ${part.name} does not keep its table offset (its table ` +
            `is not laid out by buildTable)`,
        );
      }
      owner.set(mine.name, { part, entry: e });
    }
    composed.push({ part, offset, prefix: prefixes[k] });
  }
  const values = new Float32Array(table.size);
  for (const c of composed) values.set(c.part.values.subarray(0, c.part.table.size), c.offset);
  const params = tensorFrom(gpu, [table.size], values, { label: `${name}.params` });
  const partView = (flat: Tensor, index: number): Tensor => {
    const c = composed[index];
    return {
      ...flat,
      offset: flat.offset + c.offset * 4,
      shape: [c.part.table.size],
      label: `${flat.label}[${c.part.name}]`,
    };
  };
  return {
    name,
    table,
    params,
    parts: composed,
    values,
    partView,
    incremental: parts.every((p) => p.incremental !== false),
    attach(ctx) {
      const hooks = composed.map((c, k) =>
        c.part.attach({ ...ctx, grads: ctx.grads ? partView(ctx.grads, k) : null }, partView(params, k))
      );
      try {
        return chainHooks(name, hooks, names);
      } catch (err) {
        for (const h of hooks) h.destroy?.();
        throw err;
      }
    },
    group(entry) {
      const o = owner.get(entry.name);
      return o?.part.group?.(o.entry) ?? {};
    },
    destroy: () => params.buffer.destroy(),
  };
}

/** The part of `hooks` that defines `key`, refusing two. */
function sole<K extends keyof AdapterHooks>(
  adapter: string,
  hooks: readonly AdapterHooks[],
  names: readonly string[],
  key: K,
): AdapterHooks | null {
  const owners = hooks.flatMap((h, k) => (h[key] ? [k] : []));
  if (owners.length > 1) {
    throw new RangeError(
      `composeAdapters(${adapter}): parts ${owners.map((k) => names[k]).join(" and ")} both define ${key}; ` +
        `only one part may`,
    );
  }
  return owners.length ? hooks[owners[0]] : null;
}

/**
 * Runs hooks one after the other; backward hooks in reverse order. At most one part may supply the
 * attention parameters and one the output mix (`names` name the parts in the error).
 */
export function chainHooks(
  adapter: string,
  hooks: readonly AdapterHooks[],
  names: readonly string[],
): AdapterHooks {
  const backward = [...hooks].reverse();
  const attention = sole(adapter, hooks, names, "attention");
  const attentionBack = sole(adapter, hooks, names, "attentionBackward");
  const mix = sole(adapter, hooks, names, "mixOutput");
  const mixBack = sole(adapter, hooks, names, "mixOutputBackward");
  if (attention !== attentionBack && attention && attentionBack) {
    throw new RangeError(
      `composeAdapters(${adapter}): attention and attentionBackward come from different parts`,
    );
  }
  if (mix !== mixBack) {
    throw new RangeError(
      `composeAdapters(${adapter}): mixOutput and mixOutputBackward must come from one part`,
    );
  }
  const out: AdapterHooks = {
    async linearForward(rec, site, y, x) {
      for (const h of hooks) await h.linearForward?.(rec, site, y, x);
    },
    async linearBackward(rec, site, dx, dy, x) {
      for (const h of backward) await h.linearBackward?.(rec, site, dx, dy, x);
    },
    destroy() {
      for (const h of hooks) h.destroy?.();
    },
  };
  if (attention) out.attention = attention.attention!.bind(attention);
  if (attentionBack) out.attentionBackward = attentionBack.attentionBackward!.bind(attentionBack);
  if (mix) {
    out.mixOutput = mix.mixOutput!.bind(mix);
    out.mixOutputBackward = mix.mixOutputBackward!.bind(mix);
  }
  if (hooks.some((h) => h.finalNorm)) {
    out.finalNorm = async (rec, lnf) => {
      for (const h of hooks) await h.finalNorm?.(rec, lnf);
    };
  }
  if (hooks.some((h) => h.finalNormBackward)) {
    out.finalNormBackward = async (rec, dlnf) => {
      for (const h of backward) await h.finalNormBackward?.(rec, dlnf);
    };
  }
  return out;
}

/** LoRA (lora.ts) as a part: its matrices, A initialised from `seed`, B = 0. */
export function loraPart(
  gpu: Gpu,
  model: ModelConfig,
  config: LoraConfig,
  seed: number,
  name = "lora",
): AdapterPart & { matrices: LoraMatrix[]; scale: number } {
  const matrices = loraMatrices(model, config);
  const table = buildTable(loraSpecs(matrices, config.r));
  const values = new Float32Array(table.size);
  initLoraA(values, table, matrices, config.r, config.init, seed);
  const scale = loraScale(config);
  return {
    name,
    table,
    values,
    matrices,
    scale,
    attach: (ctx, params) => loraHooks(gpu, ctx, params, table, matrices, config.r, scale),
  };
}
