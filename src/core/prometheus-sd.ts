/**
 * Prometheus service discovery for Loom's proxies: one target group per proxy, its admin endpoint (where
 * `/stats/prometheus` is) and labels saying which workload it is. The same groups serve Prometheus' file-based
 * discovery (`file_sd_configs`: the file `loom up` keeps) and its HTTP discovery (`http_sd_configs`: the control
 * plane's `GET /api/v1/prometheus/targets`); both read this JSON format:
 *
 *   [{"targets": ["127.0.0.1:33167"], "labels": {"namespace": "default", "workload": "reviews-v1", "kind": "sidecar",
 *     "app": "reviews", "version": "v2"}}]
 *
 * Labels are the workload's own labels (as Kubernetes' pod role maps them: characters a Prometheus label name cannot
 * hold become `_`), then `namespace`, `workload` and `kind` (`sidecar` | `gateway`), which win over a workload label
 * of the same name.
 */

/** What one proxy is, for scraping. */
export interface ScrapeTarget {
  /** host:port of the proxy's admin endpoint */
  adminAddress: string
  kind: 'sidecar' | 'gateway'
  namespace: string
  /** the workload's name (Istio's: the deployment's, `reviews-v1`; a gateway's name, `ingressgateway`) */
  workload: string
  /** the workload's labels (`app`, `version`, ...) */
  labels: Readonly<Record<string, string>>
}

/** One entry of Prometheus' file_sd / http_sd JSON. */
export interface TargetGroup {
  targets: string[]
  labels: Record<string, string>
}

/** Where `/stats/prometheus` is on a proxy's admin endpoint (the scrape config's metrics_path). */
export const METRICS_PATH = '/stats/prometheus'

/** The scrape job's name: Istio's for its proxies' Envoy stats. */
export const SCRAPE_JOB = 'envoy-stats'

/** A label name Prometheus accepts (`[a-zA-Z_][a-zA-Z0-9_]*`): `security.istio.io/tlsMode` → `security_istio_io_tlsMode`. */
export function labelName(key: string): string {
  const name = key.replace(/[^a-zA-Z0-9_]/g, '_')
  return /^[0-9]/.test(name) ? `_${name}` : name
}

export function targetGroup(t: ScrapeTarget): TargetGroup {
  const labels: Record<string, string> = {}
  for (const key of Object.keys(t.labels).sort()) {
    const name = labelName(key)
    // `__` names are Prometheus' own (dropped after relabelling, or worse, `__address__`)
    if (name.startsWith('__')) continue
    labels[name] = t.labels[key]!
  }
  labels.namespace = t.namespace
  labels.workload = t.workload
  labels.kind = t.kind
  return { targets: [t.adminAddress], labels }
}

/** Every proxy's group, in a stable order (by kind, namespace, workload, address), so an unchanged mesh gives the same text. */
export function targetGroups(targets: readonly ScrapeTarget[]): TargetGroup[] {
  const key = (t: ScrapeTarget) => `${t.kind}\0${t.namespace}\0${t.workload}\0${t.adminAddress}`
  return [...targets].sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0)).map(targetGroup)
}

/** The groups as the file / HTTP answer carries them. */
export function renderTargetGroups(targets: readonly ScrapeTarget[]): string {
  return `${JSON.stringify(targetGroups(targets), null, 2)}\n`
}

/**
 * The workload name in an Istio node id (`sidecar~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local`): the pod
 * part without its namespace, or null when the id is not of that form.
 */
export function workloadOfNodeId(nodeId: string): string | null {
  const parts = nodeId.split('~')
  if (parts.length !== 4) return null
  const pod = parts[2]!
  const dot = pod.lastIndexOf('.')
  const name = dot > 0 ? pod.slice(0, dot) : pod
  return name === '' ? null : name
}

export interface PrometheusConfigOptions {
  /** file_sd: the targets file (absolute); http_sd: the control plane's targets URL */
  source: { file: string } | { url: string }
  /** Prometheus duration, e.g. `5s` */
  scrapeInterval: string
  /** a comment line saying what the config is for */
  comment: string
}

/** A Prometheus duration (`5s`, `1m`, `500ms`, `1m30s`) in milliseconds, or null when it is not one. */
export function promDurationMs(text: string): number | null {
  const m = /^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$/.exec(text)
  if (m === null || text === '') return null
  const [, h, min, s, ms] = m.map((x) => (x === undefined ? 0 : Number(x)))
  return h! * 3_600_000 + min! * 60_000 + s! * 1000 + ms!
}

/**
 * A complete prometheus.yml that scrapes every proxy of a mesh: Istio's `envoy-stats` job on the admin endpoints'
 * `/stats/prometheus`, its targets from the file `loom up` keeps (or the control plane's HTTP discovery). The scrape
 * timeout is the interval, at most 10 s (Prometheus refuses one longer than the interval).
 */
export function prometheusConfig(o: PrometheusConfigOptions): string {
  const timeout = (promDurationMs(o.scrapeInterval) ?? 0) > 10_000 ? '10s' : o.scrapeInterval
  const sd =
    'file' in o.source
      ? `    file_sd_configs:\n      - files: [${JSON.stringify(o.source.file)}]\n        # the file is watched; this re-reads it anyway, should a change notification be missed\n        refresh_interval: 30s\n`
      : `    http_sd_configs:\n      - url: ${JSON.stringify(o.source.url)}\n        refresh_interval: 5s\n`
  return `# ${o.comment}
# prometheus --config.file=prometheus.yml    (then http://localhost:9090, e.g. the query istio_requests_total)
global:
  scrape_interval: ${o.scrapeInterval}
  scrape_timeout: ${timeout}
  evaluation_interval: ${o.scrapeInterval}
scrape_configs:
  # every sidecar and gateway of the mesh: Istio's standard metrics and the Envoy-style stats
  - job_name: ${SCRAPE_JOB}
    metrics_path: ${METRICS_PATH}
${sd}`
}
