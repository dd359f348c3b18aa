// Builds the dashboard into dist/web: one bundle (app.js, with its libraries), its stylesheet and index.html.
// Type checking is `tsc -p web/tsconfig.json` (run by `npm run build` before this).
import { copyFileSync, mkdirSync, readdirSync, rmSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'

const here = dirname(fileURLToPath(import.meta.url))
const out = join(here, '..', 'dist', 'web')
rmSync(out, { recursive: true, force: true })
mkdirSync(out, { recursive: true })
await build({
  entryPoints: [join(here, 'src', 'main.ts')],
  bundle: true,
  format: 'esm',
  target: 'es2022',
  outfile: join(out, 'app.js'),
  minify: true,
  legalComments: 'linked',
  logLevel: 'warning',
})
for (const f of readdirSync(join(here, 'static'))) copyFileSync(join(here, 'static', f), join(out, f))
copyFileSync(join(here, '..', 'node_modules', 'uplot', 'dist', 'uPlot.min.css'), join(out, 'uplot.css'))
