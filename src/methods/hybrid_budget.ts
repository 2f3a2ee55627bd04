/**
 * The hybrid method's budget solver (methods spec §8.2): one trainable-parameter budget P split by
 * fractions (f_lora, f_sparse, f_attn) among a global LoRA rank r, k FFN neurons in each sparse layer, and
 * the attention filters' fixed c·H·L scalars:
 *
 *   P ≥ r·Σ_m(d_in,m + d_out,m) + n·Σ_ℓ k_ℓ + c·H·L,
 *   r = ⌊f_lora·P / Σ_m(d_in,m + d_out,m)⌋,   k = ⌊f_sparse·P / (n·|𝓛_s|)⌋,
 *
 * with n the parameters of one neuron's delta (3·C for SwiGLU; 2·C + 1 for GPT-2's fc row, fc bias entry
 * and fcProj column). Each component spends at most its share ⌊f·P⌋ and leaves less than one unit of it
 * (a rank, or one neuron in every sparse layer) unspent; the attention scalars are a fixed cost, not a
 * knob (§8.2): their share must cover c·H·L and its rest stays unspent. So the total never exceeds P.
 * Every input is an integer and every step an integer division, so the plan is exact.
 */

/** The budget's split: non-negative fractions that sum to 1. */
export interface BudgetFractions {
  lora: number;
  sparse: number;
  attention: number;
}

/** What one unit of each component costs in a given model. */
export interface BudgetCosts {
  /** Σ_m (d_in + d_out) over the LoRA matrices: parameters per unit of rank. */
  loraPerRank: number;
  /** Parameters of one selected neuron's delta. */
  perNeuron: number;
  /** Number of layers that select neurons (|𝓛_s|). */
  sparseLayers: number;
  /** The FFN width: the most neurons a layer has. */
  maxNeurons: number;
  /** The attention filters' fixed cost c·H·L (paid when f_attn > 0). */
  attention: number;
}

/** How a budget is spent. */
export interface BudgetPlan {
  budget: number;
  fractions: BudgetFractions;
  /** ⌊f·P⌋ per component. */
  shares: BudgetFractions;
  /** LoRA rank (0 when f_lora = 0). */
  r: number;
  /** Neurons per sparse layer (0 when f_sparse = 0). */
  k: number;
  /** Whether the attention filters are on (f_attn > 0). */
  attention: boolean;
  /** Parameters each component allocates, their total, and P − total. */
  spent: { lora: number; sparse: number; attention: number; total: number };
  unspent: number;
}

/** How far the fractions' sum may stray from 1 (0.6 + 0.3 + 0.1 is 0.9999999999999999 in doubles). */
const SUM_TOLERANCE = 1e-9;
/** Relative slack for an f·P that is an integer up to float rounding. */
const SHARE_TOLERANCE = 1e-12;

/** ⌊f·P⌋, where an f·P within float rounding of an integer counts as that integer (0.29·100 = 29). */
function shareOf(f: number, P: number): number {
  const x = f * P;
  const near = Math.round(x);
  return Math.abs(x - near) <= SHARE_TOLERANCE * Math.max(1, x) ? near : Math.floor(x);
}

/**
 * Rank, neurons per layer and the attention filters for budget P and fractions; throws (naming the field)
 * on a budget or fraction it cannot honour.
 * @example solveBudget(1_000_000, { lora: 0.6, sparse: 0.3, attention: 0.1 }, costs).r
 */
export function solveBudget(budget: number, fractions: BudgetFractions, costs: BudgetCosts): BudgetPlan {
  if (!Number.isSafeInteger(budget) || budget < 1) {
    throw new RangeError(`hybrid budget: P = ${budget} must be a positive integer (trainable parameters)`);
  }
  for (const [name, value] of Object.entries(costs)) {
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new RangeError(`hybrid budget: cost ${name} = ${value} must be a non-negative integer`);
    }
  }
  for (const name of ["lora", "sparse", "attention"] as const) {
    const f = fractions[name];
    if (!Number.isFinite(f) || f < 0 || f > 1) {
      throw new RangeError(`hybrid budget: fractions.${name} = ${f} must lie in [0, 1]`);
    }
  }
  const sum = fractions.lora + fractions.sparse + fractions.attention;
  if (Math.abs(sum - 1) > SUM_TOLERANCE) {
    throw new RangeError(
      `hybrid budget: fractions lora ${fractions.lora} + sparse ${fractions.sparse} + attention ` +
        `${fractions.attention} sum to ${sum}, expected 1`,
    );
  }
  // Shares of the fractions normalised to sum 1 in doubles, so they add up to at most P.
  const shares: BudgetFractions = {
    lora: shareOf(fractions.lora / sum, budget),
    sparse: shareOf(fractions.sparse / sum, budget),
    attention: shareOf(fractions.attention / sum, budget),
  };

  let r = 0;
  if (fractions.lora > 0) {
    if (costs.loraPerRank < 1) {
      throw new RangeError("hybrid budget: fractions.lora > 0 but LoRA adapts no matrix");
    }
    r = Math.floor(shares.lora / costs.loraPerRank);
    if (r < 1) {
      throw new RangeError(
        `hybrid budget: fractions.lora·P = ${shares.lora} buys no LoRA rank (one rank costs ` +
          `Σ(d_in + d_out) = ${costs.loraPerRank}); raise the budget or fractions.lora, or set it to 0`,
      );
    }
  }
  let k = 0;
  if (fractions.sparse > 0) {
    const perRound = costs.perNeuron * costs.sparseLayers;
    if (perRound < 1) {
      throw new RangeError("hybrid budget: fractions.sparse > 0 but no layer selects neurons");
    }
    k = Math.floor(shares.sparse / perRound);
    if (k < 1) {
      throw new RangeError(
        `hybrid budget: fractions.sparse·P = ${shares.sparse} buys no neuron per layer (one neuron in each of ` +
          `${costs.sparseLayers} layers costs ${perRound}); raise the budget or fractions.sparse, or set it to 0`,
      );
    }
    if (k > costs.maxNeurons) {
      throw new RangeError(
        `hybrid budget: fractions.sparse·P = ${shares.sparse} asks for ${k} neurons per layer, but the FFN ` +
          `has ${costs.maxNeurons}; lower fractions.sparse`,
      );
    }
  }
  const attention = fractions.attention > 0;
  if (attention && shares.attention < costs.attention) {
    throw new RangeError(
      `hybrid budget: fractions.attention·P = ${shares.attention} cannot pay for the attention filters' ` +
        `fixed c·H·L = ${costs.attention} scalars; raise the budget or fractions.attention, or set it to 0`,
    );
  }
  const spent = {
    lora: r * costs.loraPerRank,
    sparse: k * costs.perNeuron * costs.sparseLayers,
    attention: attention ? costs.attention : 0,
    total: 0,
  };
  spent.total = spent.lora + spent.sparse + spent.attention;
  if (spent.total > budget) {
    // Unreachable: each part spends at most its share and the shares sum to at most P.
    throw new Error(`hybrid budget: internal error, plan spends ${spent.total} of P = ${budget}`);
  }
  return {
    budget,
    fractions: { ...fractions },
    shares,
    r,
    k,
    attention,
    spent,
    unspent: budget - spent.total,
  };
}
