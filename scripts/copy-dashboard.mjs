// The dashboard's page, script and styles are served as they are (no build step):
// tsc emits only the .ts files, so the build copies them next to dist/server/dashboard/plugin.js.
import fs from 'node:fs';

fs.rmSync('dist/server/dashboard/static', { recursive: true, force: true });
fs.cpSync('src/server/dashboard/static', 'dist/server/dashboard/static', { recursive: true });
