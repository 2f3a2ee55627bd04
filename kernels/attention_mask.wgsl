// Attention mask modes shared by kernels/attention_fwd.wgsl and kernels/attention_bwd.wgsl.
// Library file (no entry points, no bindings): kernels use it with `//! import attention_mask`.
// No mask is ever materialised. Every mode but `turns` is a window of keys [keyStart(i), keyEnd(i)) per
// query and the mirror window of queries [queryStart(j), queryEnd(j)) per key; the windows are also what
// lets the kernels skip whole tiles, so grouped heads cost O(T·G) instead of O(T²).

const MODE_FULL: u32 = 0u;
const MODE_CAUSAL: u32 = 1u;
// Causal inside [0, G), [G, 2G), … (S²-Attn's unshifted half of the heads).
const MODE_GROUPS: u32 = 2u;
// Causal inside [0, G/2), [G/2, 3G/2), …, [T − G/2, T): half-groups at both ends and no wrap-around, the
// no-leak flash-path variant of S²-Attn's shifted half.
const MODE_GROUPS_SHIFTED: u32 = 3u;
// FocuSFT glm_bidir from per-token turn ids and flags (see turnVisible).
const MODE_TURNS: u32 = 4u;

// Token flag bits (tokenFlags): a response token is causal inside its turn, a context token sees its
// whole turn; a padding token neither attends nor is attended.
const TOKEN_RESPONSE: u32 = 1u;
const TOKEN_PAD: u32 = 2u;

// Marks a masked score and starts the running max: finite, so that exp(MASKED − m) is exactly 0 without
// any infinity arithmetic (WGSL lets implementations assume there are no infinities).
const MASKED: f32 = -3.0e38;

fn isGroupMode(mode: u32) -> bool {
  return mode == MODE_GROUPS || mode == MODE_GROUPS_SHIFTED;
}

// Index of the group holding token x; shifted groups start G/2 earlier, so group 0 is a half-group.
fn groupOf(mode: u32, G: u32, x: u32) -> u32 {
  return select(x, x + G / 2u, mode == MODE_GROUPS_SHIFTED) / G;
}

// First key query i may see.
fn keyStart(mode: u32, G: u32, i: u32) -> u32 {
  if (!isGroupMode(mode)) {
    return 0u;
  }
  let start = groupOf(mode, G, i) * G;
  if (mode == MODE_GROUPS || start == 0u) {
    return start;
  }
  return start - G / 2u;
}

// One past the last key query i may see (`turns` narrows it further per element).
fn keyEnd(mode: u32, T: u32, i: u32) -> u32 {
  return select(i + 1u, T, mode == MODE_FULL || mode == MODE_TURNS);
}

// First query that may see key j.
fn queryStart(mode: u32, j: u32) -> u32 {
  return select(j, 0u, mode == MODE_FULL || mode == MODE_TURNS);
}

// One past the last query that may see key j.
fn queryEnd(mode: u32, G: u32, T: u32, j: u32) -> u32 {
  if (!isGroupMode(mode)) {
    return T;
  }
  let end = (groupOf(mode, G, j) + 1u) * G;
  return min(T, select(end, end - G / 2u, mode == MODE_GROUPS_SHIFTED));
}

// glm_bidir: earlier turns fully, the same context turn both ways, the same response turn causally.
fn turnVisible(i: u32, turnI: u32, flagI: u32, j: u32, turnJ: u32, flagJ: u32) -> bool {
  if (((flagI | flagJ) & TOKEN_PAD) != 0u) {
    return false;
  }
  return turnJ < turnI || (turnJ == turnI && ((flagI & TOKEN_RESPONSE) == 0u || j <= i));
}
