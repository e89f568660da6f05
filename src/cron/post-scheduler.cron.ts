/**
 * Cron trigger entry point (the seed's post-scheduler.cron.ts): `post-scheduler cron`, one
 * cycle, exit 0 / 1 / 2, whatever arguments it is given. For system cron:
 *   * * * * * cd /var/www/app && node dist/cron/post-scheduler.cron.js >> /var/log/social-scheduler.log 2>&1
 *
 * It runs the command itself (src/cli.ts), so compiled it starts as the command does, from
 * its bundle and the V8 code cache of it (dist/cli.js runs dist/cli.cjs): a cycle with
 * nothing due took 122 ms of CPU through this file's own ES modules, 93 ms this way.
 */
process.argv.splice(2, process.argv.length, 'cron');
await import('../cli.ts');
