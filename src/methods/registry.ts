/**
 * Every method longtune runs, by registry name. Suites, the CLI and reports refer to methods by these
 * names; `getMethod` names the known ones when asked for another.
 */
import { baseline, full } from "./baseline.ts";
import { dora } from "./dora.ts";
import { focusft } from "./focusft.ts";
import { hybrid } from "./hybrid.ts";
import { hylorada } from "./hylorada.ts";
import { lift } from "./lift.ts";
import { longlora } from "./longlora.ts";
import { lorada } from "./lorada.ts";
import { lora, rslora } from "./lora.ts";
import { pissa } from "./pissa.ts";
import type { Method } from "./method.ts";

/** The registry, in the order `longtune list methods` prints it. */
export const METHODS: readonly Method[] = [
  baseline,
  full,
  lora,
  rslora,
  dora,
  pissa,
  longlora,
  hylorada,
  hybrid,
  focusft,
  lorada,
  lift,
];

/**
 * The method named `name`.
 * @example const m = getMethod("lora"); const config = m.config.parse({ r: 8 });
 */
export function getMethod(name: string): Method {
  const m = METHODS.find((x) => x.name === name);
  if (!m) {
    throw new RangeError(`unknown method "${name}"; known: ${METHODS.map((x) => x.name).join(", ")}`);
  }
  return m;
}
