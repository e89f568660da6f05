#!/usr/bin/env node
/** The `post-scheduler` command. Thin: parsing and commands live in src/cli/. */
import { buildProgram } from './cli/program.ts';
import { cliErrorMessage } from './cli/errors.ts';
import { guardOutput } from './output.ts';

guardOutput();

buildProgram()
  .parseAsync(process.argv)
  .catch((e: unknown) => {
    process.stderr.write(`post-scheduler: ${cliErrorMessage(e)}\n`);
    process.exitCode = 1;
  });
