/**
 * How the `longtune` command reports failures: which errors are the user's to fix (one line, no stack),
 * which are usage errors (exit 2), an interrupt (exit 130), and which are bugs (stack always shown).
 */

import { CommanderError } from "commander";
import { z } from "zod";
import { DataFileError } from "../data/loaders.ts";
import { NoGpuError } from "../gpu/device.ts";
import { IncomparableReportsError } from "../harness/leaderboard.ts";
import { describeIssues, SchemaValidationError } from "../harness/report_schema.ts";

/** A bad flag value or combination found after parsing; the message names the flag and the value. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** The user pressed Ctrl-C; finished files are kept and a rerun resumes. */
export class InterruptedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InterruptedError";
  }
}

/** Exit status of a usage error, as POSIX tools and shells use it. */
export const EXIT_USAGE = 2;
/** Exit status after SIGINT (128 + signal 2), what a shell reports for a program killed by Ctrl-C. */
export const EXIT_INTERRUPTED = 130;

/** What the command prints on stderr for a failure, and the exit status it ends with. */
export interface Failure {
  exitCode: number;
  /** Text for stderr, without a trailing newline; empty when commander has already printed it. */
  text: string;
}

// Errors the code base raises about the user's input: files, flags, schemas, lengths. A plain `Error`
// counts too, because loaders throw it with the file's name in the message (e.g. "x.json: not JSON").
function isUserFacing(error: Error): boolean {
  return error instanceof DataFileError || error instanceof SchemaValidationError ||
    error instanceof IncomparableReportsError || error instanceof RangeError ||
    error instanceof Deno.errors.NotFound || error instanceof Deno.errors.PermissionDenied ||
    error instanceof Deno.errors.AlreadyExists || error instanceof Deno.errors.IsADirectory ||
    error instanceof Deno.errors.NotADirectory || error instanceof UsageError ||
    Object.getPrototypeOf(error) === Error.prototype;
}

/**
 * Turns anything thrown by a command into stderr text and an exit status. `verbose` appends stacks.
 * @example const { exitCode, text } = describeFailure(new RangeError("--samples: 0 must be ≥ 1"), false);
 */
export function describeFailure(error: unknown, verbose: boolean): Failure {
  const stack = (e: Error) => (verbose && e.stack ? `\n${e.stack}` : "");
  if (error instanceof CommanderError) {
    // Commander has printed its own message (help, or the offending option and value) already.
    const helpShown = error.code === "commander.helpDisplayed" || error.code === "commander.version" ||
      (error.code === "commander.help" && error.exitCode === 0);
    return { exitCode: helpShown ? 0 : EXIT_USAGE, text: "" };
  }
  if (error instanceof NoGpuError) return { exitCode: 1, text: error.message + stack(error) };
  if (error instanceof InterruptedError) {
    return { exitCode: EXIT_INTERRUPTED, text: `longtune: ${error.message}` };
  }
  if (error instanceof z.ZodError) {
    const lines = describeIssues(error.issues).map((issue) => `  ${issue.path}: ${issue.message}`);
    return { exitCode: 1, text: `longtune: invalid value:\n${lines.join("\n")}${stack(error)}` };
  }
  if (error instanceof Error && isUserFacing(error)) {
    return {
      exitCode: error instanceof UsageError ? EXIT_USAGE : 1,
      text: `longtune: ${error.message}${stack(error)}`,
    };
  }
  // Anything else is a bug in longtune, and its stack is what a bug report needs.
  if (error instanceof Error) {
    return {
      exitCode: 1,
      text: `longtune: internal error: ${error.message}\n${error.stack ?? ""}`.trimEnd(),
    };
  }
  return { exitCode: 1, text: `longtune: internal error: ${String(error)}` };
}
