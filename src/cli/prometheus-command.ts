/** `loom prometheus-config`: a prometheus.yml that scrapes every proxy of the mesh `loom up` runs. */
import { existsSync } from 'node:fs'
import { resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { ErrorCodes, LoomError } from '../core/errors.js'
import { prometheusConfig, promDurationMs } from '../core/prometheus-sd.js'
import { prometheusTargetsPath, readState } from '../runtime/up.js'

export const PROMETHEUS_CONFIG_USAGE = `Usage: loom prometheus-config [--data-dir DIR] [--scrape-interval DURATION] [--http-sd [--server URL]]

Prints a Prometheus configuration (prometheus.yml) that scrapes every sidecar and gateway of the mesh 'loom up' (or
'loom demo') runs from DIR: the job envoy-stats, each proxy's admin endpoint at /stats/prometheus, labelled with its
namespace, workload, kind (sidecar | gateway) and the workload's labels (app, version, ...).

The targets come from <data-dir>/prometheus/targets.json, which 'loom up' keeps (Prometheus' file_sd_configs): it is
rewritten as proxies start and emptied when the mesh stops, so a Prometheus left running follows one 'loom up' after
another. With --http-sd they come from the control plane's API instead (GET /api/v1/prometheus/targets, Prometheus'
http_sd_configs): every proxy connected to it, whoever started it.

Options:
      --data-dir <dir>             the mesh's data dir (default: ./.loom; 'loom demo' uses ./.loom/demo)
      --scrape-interval <duration> how often Prometheus scrapes, e.g. 5s, 15s, 1m (default 5s)
      --http-sd                    discover the proxies through the control plane's API, not the file
      --server <url>               with --http-sd: the control plane's API (default: the running mesh's, else
                                   LOOM_SERVER, else 127.0.0.1:15080)
  -h, --help                       show this help

Examples:
  loom prometheus-config --data-dir .loom/demo > prometheus.yml
  prometheus --config.file=prometheus.yml --storage.tsdb.path=/tmp/loom-prometheus
  loom prometheus-config --http-sd --server 127.0.0.1:15080 --scrape-interval 15s
`

export function prometheusConfigCommand(argv: string[]): void {
  const { values } = parseArgs({
    args: argv,
    options: {
      'data-dir': { type: 'string' },
      'scrape-interval': { type: 'string' },
      'http-sd': { type: 'boolean' },
      server: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (values.help) return void process.stdout.write(PROMETHEUS_CONFIG_USAGE)
  const interval = values['scrape-interval'] ?? '5s'
  const ms = promDurationMs(interval)
  if (ms === null || ms === 0)
    throw new LoomError(
      ErrorCodes.USAGE,
      `--scrape-interval must be a Prometheus duration such as 5s, 15s or 1m, got "${interval}"`,
    )
  if (values.server !== undefined && !values['http-sd'])
    throw new LoomError(ErrorCodes.USAGE, '--server goes with --http-sd (the file needs no server)')
  const dataDir = resolve(values['data-dir'] ?? '.loom')
  if (values['http-sd']) {
    const s = values.server ?? readState(dataDir)?.api ?? process.env.LOOM_SERVER ?? '127.0.0.1:15080'
    const base = s.startsWith('http') ? s.replace(/\/$/, '') : `http://${s}`
    process.stdout.write(
      prometheusConfig({
        source: { url: `${base}/api/v1/prometheus/targets` },
        scrapeInterval: interval,
        comment: `Prometheus for the Loom proxies connected to the control plane at ${base} (loom prometheus-config --http-sd)`,
      }),
    )
    return
  }
  const file = prometheusTargetsPath(dataDir)
  if (!existsSync(file))
    process.stderr.write(
      `loom: ${file} does not exist yet; 'loom up --data-dir ${dataDir}' writes it (Prometheus waits for it)\n`,
    )
  process.stdout.write(
    prometheusConfig({
      source: { file },
      scrapeInterval: interval,
      comment: `Prometheus for the Loom mesh run from ${dataDir} (loom prometheus-config)`,
    }),
  )
}
