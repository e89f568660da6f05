#!/usr/bin/env node
/** The `post-scheduler` command. Thin: parsing and commands live in src/cli/. */
import { buildProgram } from './cli/program.ts';
import { cliErrorMessage } from './cli/errors.ts';
import type { GlobalFlags } from './cli/context.ts';
import { requestedLogFormat } from './config.ts';
import { printError, reportUncaught } from './log.ts';
import { guardOutput } from './output.ts';

guardOutput();

const program = buildProgram();
const logFormat = () => requestedLogFormat(process.env, { LOG_FORMAT: program.opts<GlobalFlags>().logFormat });
// the global flags are parsed by then
program.hook('preAction', () => reportUncaught(logFormat()));
program.parseAsync(process.argv).catch((e: unknown) => {
  // JSON too when LOG_FORMAT=json (or --log-format json), even for a bad configuration
  printError(cliErrorMessage(e), logFormat());
  process.exitCode = 1;
});
