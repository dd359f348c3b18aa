/** `loom dashboard`: the dashboard's address, checked, and opened in a browser where there is one. */
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { ErrorCodes, LoomError } from '../core/errors.js'
import { serverOf } from './explain-command.js'

export const DASHBOARD_USAGE = `Usage: loom dashboard [--server URL] [--data-dir DIR] [--no-open]

Prints the address of the dashboard that the control plane serves on its API port (/dashboard/): the live service
graph, each service's and workload's golden signals, config, proxies, live requests and explain. It opens in the
desktop's browser (xdg-open, or open on macOS) unless --no-open, or when there is no desktop.

The dashboard is read-only unless the control plane has API tokens (loom control --api-token-file) and you enter a
token that allows writes on its Config page.

Options:
      --server <url>     the control plane's API (default: from --data-dir's up.json, else LOOM_SERVER or
                         127.0.0.1:15080)
      --data-dir <dir>   a loom up / loom demo data directory (default ./.loom or ./.loom/demo)
      --no-open          print the address only

Examples:
  loom demo &  loom dashboard
  loom dashboard --server 127.0.0.1:15080 --no-open
`

/** The desktop's opener, if this machine has one and a display. */
function opener(): string | null {
  if (process.platform === 'darwin') return 'open'
  if (process.env.DISPLAY === undefined && process.env.WAYLAND_DISPLAY === undefined) return null
  for (const dir of (process.env.PATH ?? '').split(':'))
    if (dir !== '' && existsSync(`${dir}/xdg-open`)) return `${dir}/xdg-open`
  return null
}

export async function dashboardCommand(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      server: { type: 'string' },
      'data-dir': { type: 'string' },
      'no-open': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (values.help) return void process.stdout.write(DASHBOARD_USAGE)
  const s = serverOf(values)
  const base = s.startsWith('http') ? s.replace(/\/$/, '') : `http://${s}`
  const url = `${base}/dashboard/`
  try {
    const r = await fetch(url, { signal: AbortSignal.timeout(3000) })
    if (r.status !== 200) throw new Error(`${r.status} ${(await r.text()).trim()}`)
  } catch (err) {
    throw new LoomError(
      ErrorCodes.USAGE,
      `the dashboard at ${url} does not answer (${(err as Error).message}). Is \`loom control\` (or loom up / demo) running? Set --server or LOOM_SERVER to its API address.`,
    )
  }
  process.stdout.write(`${url}\n`)
  const open = values['no-open'] ? null : opener()
  if (open !== null) spawn(open, [url], { stdio: 'ignore', detached: true }).unref()
}
