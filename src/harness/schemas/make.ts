/**
 * Generates the JSON Schemas of report.json and leaderboard.json from their zod schemas. Run
 * `deno run --allow-write=src/harness/schemas src/harness/schemas/make.ts` after changing a schema;
 * tests/report_test.ts fails while the committed files differ from what this produces.
 */

import { z } from "zod";
import { writeFileAtomic } from "../../data/layouts.ts";
import { leaderboardSchema } from "../leaderboard.ts";
import { reportSchema } from "../report_schema.ts";

/** The schema files by name, as JSON text. Cross-field checks (refinements) are not expressible here. */
export function generateSchemaFiles(): Record<string, string> {
  const render = (schema: z.ZodType) =>
    JSON.stringify(z.toJSONSchema(schema, { target: "draft-2020-12" }), null, 2) + "\n";
  return {
    "report.schema.json": render(reportSchema),
    "leaderboard.schema.json": render(leaderboardSchema),
  };
}

if (import.meta.main) {
  const folder = new URL(".", import.meta.url);
  for (const [name, text] of Object.entries(generateSchemaFiles())) {
    await writeFileAtomic(new URL(name, folder).pathname, text);
    console.log(`wrote ${name}`);
  }
}
