/** `loom describe service`, `loom proxy-config` and `loom completion`: looking inside a running mesh. */
import { existsSync, readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { dump as toYaml } from 'js-yaml'
import { ErrorCodes, LoomError } from '../core/errors.js'
import type { ServiceDescription } from '../control/describe.js'
import { statePath, type UpState, workloadName } from '../runtime/up.js'
import { table } from './table.js'

export const DESCRIBE_USAGE = `Usage: loom describe service <name> [-n namespace] [-o table|json|yaml] [--server URL]
       loom describe workload <name> [-n namespace] [-o table|json|yaml] [--server URL]

service: one page about a service: its ports, every endpoint with its labels and health, the DestinationRule
(subsets and their endpoints, traffic policy) and the VirtualServices that route it, in order.

workload: a registered workload's security, as its sidecar gets it: the mTLS mode of each inbound port and the
PeerAuthentication that decided it (port, workload, namespace or mesh level; PERMISSIVE by default), the TLS mode a
DestinationRule sets for the destinations it calls, and the AuthorizationPolicies (action, dry run; on TCP ports,
the rules that read HTTP requests) and RequestAuthentications that apply to it.

Examples:
  loom describe service reviews
  loom describe service reviews.default.svc.cluster.local -o json
  loom describe workload reviews-v1
  loom describe workload ratings-v1 -n bookinfo -o yaml
`

export const PROXY_CONFIG_USAGE = `Usage: loom proxy-config listeners|routes|clusters|endpoints <workload> [-o table|json] [--data-dir DIR]
       loom proxy-config <type> --admin <host:port>

What a proxy is running, from its own config dump: the workload's sidecar in the local mesh ('loom up' state in
--data-dir, default ./.loom or ./.loom/demo), or any proxy's admin address.

Examples:
  loom proxy-config clusters productpage-v1
  loom proxy-config routes reviews-v2 -o json
  loom proxy-config listeners --admin 127.0.0.1:15000
`

const SERVER = () => process.env.LOOM_SERVER ?? '127.0.0.1:15080'

async function getJson(url: string, what: string): Promise<unknown> {
  let r: Response
  try {
    r = await fetch(url)
  } catch {
    throw new LoomError(ErrorCodes.USAGE, `cannot reach ${what} at ${url}`)
  }
  if (r.status !== 200) throw new LoomError(ErrorCodes.USAGE, `${what} answered HTTP ${r.status} for ${url}`)
  return r.json()
}

export async function describeCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      namespace: { type: 'string', short: 'n' },
      output: { type: 'string', short: 'o' },
      server: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  const what = positionals[0]
  if (values.help || (what !== 'service' && what !== 'workload') || positionals[1] === undefined) {
    process.stdout.write(DESCRIBE_USAGE)
    if (!values.help) process.exitCode = 2
    return
  }
  const ns = values.namespace ?? 'default'
  const arg = positionals[1]
  if (what === 'workload') return describeWorkload(arg, ns, values.output, values.server)
  const base = `http://${(values.server ?? SERVER()).replace(/^https?:\/\//, '')}`
  // the control plane assembles the page (the dashboard's service page reads the same answer)
  const url = `${base}/api/v1/describe/service/${encodeURIComponent(ns)}/${encodeURIComponent(arg)}`
  let r: Response
  try {
    r = await fetch(url)
  } catch {
    throw new LoomError(ErrorCodes.USAGE, `cannot reach the control plane at ${url}`)
  }
  if (r.status === 404) {
    const body = (await r.json().catch(() => ({}))) as { error?: { message?: string } }
    throw new LoomError(ErrorCodes.USAGE, body.error?.message ?? `no service ${arg}`)
  }
  if (r.status !== 200) throw new LoomError(ErrorCodes.USAGE, `the control plane answered HTTP ${r.status} for ${url}`)
  const out = (await r.json()) as ServiceDescription
  const { service: svc, destinationRules: drs, virtualServices: vss } = out
  if (values.output === 'json') return void process.stdout.write(`${JSON.stringify(out, null, 2)}\n`)
  if (values.output === 'yaml') return void process.stdout.write(toYaml(out, { noRefs: true }))
  let s = `Service:    ${svc.hostname}\nNamespace:  ${svc.namespace}\nSource:     ${svc.source}\nPorts:      ${svc.ports.map((p) => `${p.number}/${p.protocol} (${p.name})`).join(', ')}\n\nEndpoints:\n`
  s += table([
    ['  ADDRESS', 'PORT', 'HEALTH', 'LABELS', 'FROM'],
    ...svc.endpoints.map((e) => [
      `  ${e.address}:${e.port}`,
      String(e.servicePort),
      e.healthy ? 'HEALTHY' : 'UNHEALTHY',
      Object.entries(e.labels)
        .map(([k, v]) => `${k}=${v}`)
        .join(','),
      e.source,
    ]),
  ])
  for (const d of drs) {
    s += `\nDestinationRule ${d.metadata.namespace}/${d.metadata.name}:\n`
    if (d.spec.trafficPolicy !== undefined) s += `  traffic policy: ${JSON.stringify(d.spec.trafficPolicy)}\n`
    for (const sub of (d.spec.subsets ?? []) as { name: string; labels?: Record<string, string> }[]) {
      const match = svc.endpoints.filter((e) => Object.entries(sub.labels ?? {}).every(([k, v]) => e.labels[k] === v))
      s += `  subset ${sub.name} (${Object.entries(sub.labels ?? {})
        .map(([k, v]) => `${k}=${v}`)
        .join(',')}): ${match.length} endpoint(s), ${match.filter((e) => e.healthy).length} healthy\n`
    }
  }
  if (drs.length === 0) s += '\nNo DestinationRule (no subsets; default load balancing).\n'
  for (const v of vss) {
    s += `\nVirtualService ${v.metadata.namespace}/${v.metadata.name} (gateways: ${((v.spec.gateways as string[] | undefined) ?? ['mesh']).join(', ')}):\n`
    ;(
      (v.spec.http ?? []) as {
        match?: unknown[]
        route?: { destination: { host: string; subset?: string }; weight?: number }[]
      }[]
    ).forEach((h, i) => {
      const when = h.match === undefined ? 'every request' : JSON.stringify(h.match)
      const to = (h.route ?? [])
        .map(
          (r) =>
            `${r.destination.host}${r.destination.subset ? `/${r.destination.subset}` : ''}${r.weight === undefined ? '' : ` ${r.weight}%`}`,
        )
        .join(', ')
      s += `  ${i + 1}. ${when} → ${to || '(redirect or direct response)'}\n`
    })
  }
  if (vss.length === 0) s += '\nNo VirtualService: requests go to every endpoint.\n'
  process.stdout.write(s)
}

interface Security {
  workload: { name: string; namespace: string; address: string; labels: Record<string, string>; serviceAccount: string }
  ports: {
    servicePort: number
    workloadPort: number
    protocol: string
    filter: string
    mode: string
    level: string
    policy: string | null
  }[]
  outboundTls: { host: string; subset: string; port: number; mode: string; rule: string }[]
  authorizationPolicies: {
    name: string
    namespace: string
    action: string
    dryRun?: boolean
    httpOnlyRules?: number[]
  }[]
  requestAuthentications: { name: string; namespace: string }[]
}

async function describeWorkload(
  name: string,
  ns: string,
  output: string | undefined,
  server: string | undefined,
): Promise<void> {
  const base = `http://${(server ?? SERVER()).replace(/^https?:\/\//, '')}`
  const url = `${base}/api/v1/workloads/${encodeURIComponent(ns)}/${encodeURIComponent(name)}/security`
  let r: Response
  try {
    r = await fetch(url)
  } catch {
    throw new LoomError(ErrorCodes.USAGE, `cannot reach the control plane at ${url}`)
  }
  if (r.status === 404) {
    const body = (await r.json().catch(() => ({}))) as { error?: { message?: string } }
    throw new LoomError(ErrorCodes.USAGE, body.error?.message ?? `no workload ${ns}/${name}`)
  }
  if (r.status !== 200) throw new LoomError(ErrorCodes.USAGE, `the control plane answered HTTP ${r.status} for ${url}`)
  const sec = (await r.json()) as Security
  if (output === 'json') return void process.stdout.write(`${JSON.stringify(sec, null, 2)}\n`)
  if (output === 'yaml') return void process.stdout.write(toYaml(sec, { noRefs: true }))
  const w = sec.workload
  const labels = Object.entries(w.labels)
    .map(([k, v]) => `${k}=${v}`)
    .join(',')
  let s = `Workload:         ${w.name}\nNamespace:        ${w.namespace}\nAddress:          ${w.address}\nService account:  ${w.serviceAccount}\nLabels:           ${labels || '(none)'}\n`
  s += '\nInbound mTLS (PeerAuthentication):\n'
  s +=
    sec.ports.length === 0
      ? '  no inbound port (the workload serves no service)\n'
      : table([
          ['  PORT', 'WORKLOAD PORT', 'PROTOCOL', 'MODE', 'DECIDED BY'],
          ...sec.ports.map((p) => [
            `  ${p.servicePort}`,
            String(p.workloadPort),
            p.protocol,
            p.mode,
            p.policy === null ? 'default (no PeerAuthentication)' : `${p.policy} (${p.level})`,
          ]),
        ])
  s += '\nOutbound TLS (DestinationRule tls):\n'
  s +=
    sec.outboundTls.length === 0
      ? '  none set: automatic mTLS to destinations with sidecars, plain text to the others\n'
      : table([
          ['  HOST', 'SUBSET', 'PORT', 'MODE', 'RULE'],
          ...sec.outboundTls.map((t) => [
            `  ${t.host}`,
            t.subset || '-',
            t.port === 0 ? '*' : String(t.port),
            t.mode,
            t.rule,
          ]),
        ])
  s += '\nAuthorizationPolicies:\n'
  s +=
    sec.authorizationPolicies.length === 0
      ? '  none: every request is allowed\n'
      : table([
          ['  NAMESPACE', 'NAME', 'ACTION', 'NOTES'],
          ...sec.authorizationPolicies.map((p) => [
            `  ${p.namespace}`,
            p.name,
            p.action,
            [
              p.dryRun ? 'dry run (not enforced)' : '',
              p.httpOnlyRules === undefined
                ? ''
                : `rules ${p.httpOnlyRules.join(', ')} read HTTP: on TCP ports ${p.action === 'ALLOW' ? 'left out' : 'HTTP fields dropped'}`,
            ]
              .filter((x) => x !== '')
              .join('; ') || '-',
          ]),
        ])
  s += '\nRequestAuthentications:\n'
  s +=
    sec.requestAuthentications.length === 0
      ? '  none: no JWT is checked\n'
      : table([['  NAMESPACE', 'NAME'], ...sec.requestAuthentications.map((p) => [`  ${p.namespace}`, p.name])])
  process.stdout.write(s)
}

function findAdmin(workload: string, dataDir: string | undefined): string {
  const dirs = dataDir !== undefined ? [dataDir] : ['.loom', '.loom/demo']
  for (const d of dirs) {
    if (!existsSync(statePath(d))) continue
    const s = JSON.parse(readFileSync(statePath(d), 'utf8')) as UpState
    const w = s.workloads.find((x) => workloadName(x) === workload) ?? s.workloads.find((x) => x.name === workload)
    if (w?.sidecar === false)
      throw new LoomError(
        ErrorCodes.USAGE,
        `workload ${workload} runs without a sidecar (sidecar.istio.io/inject: "false")`,
      )
    if (w !== undefined) return `${w.address ?? '127.0.0.1'}:${w.adminPort}`
    const g = s.gateways.find((x) => x.name === workload)
    if (g !== undefined) return `127.0.0.1:${g.adminPort}`
  }
  throw new LoomError(
    ErrorCodes.USAGE,
    `no workload "${workload}" in a running local mesh (${dirs.join(', ')}); use --admin <host:port> for any proxy`,
  )
}

export async function proxyConfigCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      output: { type: 'string', short: 'o' },
      admin: { type: 'string' },
      'data-dir': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  const type = positionals[0]
  if (values.help || type === undefined || !['listeners', 'routes', 'clusters', 'endpoints'].includes(type)) {
    process.stdout.write(PROXY_CONFIG_USAGE)
    if (!values.help) process.exitCode = 2
    return
  }
  const admin =
    values.admin ?? (positionals[1] === undefined ? undefined : findAdmin(positionals[1], values['data-dir']))
  if (admin === undefined)
    throw new LoomError(ErrorCodes.USAGE, `a workload or --admin is required\n\n${PROXY_CONFIG_USAGE}`)
  const dump = (await getJson(`http://${admin}/config_dump`, 'the proxy admin endpoint')) as {
    configs: Record<string, unknown>[]
  }
  const part = (suffix: string) => dump.configs.find((c) => String(c['@type']).endsWith(suffix)) ?? {}
  type L = {
    name: string
    address?: { socket_address?: { address: string; port_value: number } }
    filter_chains?: { filters?: { typed_config?: { rds?: { route_config_name: string }; '@type'?: string } }[] }[]
  }
  if (type === 'listeners') {
    const p = part('ListenersConfigDump') as {
      static_listeners?: { listener: L }[]
      dynamic_listeners?: { active_state: { listener: L } }[]
    }
    const ls = [
      ...(p.static_listeners ?? []).map((x) => x.listener),
      ...(p.dynamic_listeners ?? []).map((x) => x.active_state.listener),
    ]
    if (values.output === 'json') return void process.stdout.write(`${JSON.stringify(ls, null, 2)}\n`)
    return void process.stdout.write(
      table([
        ['NAME', 'ADDRESS', 'PORT', 'FILTER', 'ROUTES'],
        ...ls.map((l) => {
          // the terminal filter (last; network RBAC filters come before it)
          const f = l.filter_chains?.[0]?.filters?.at(-1)?.typed_config
          return [
            l.name,
            l.address?.socket_address?.address ?? '',
            String(l.address?.socket_address?.port_value ?? ''),
            String(f?.['@type'] ?? '')
              .split('.')
              .at(-1) ?? '',
            f?.rds?.route_config_name ?? (f?.['@type']?.includes('HttpConnection') ? 'inline' : ''),
          ]
        }),
      ]),
    )
  }
  if (type === 'routes') {
    const p = part('RoutesConfigDump') as {
      dynamic_route_configs?: {
        route_config: {
          name: string
          virtual_hosts?: {
            name: string
            domains: string[]
            routes?: {
              match: Record<string, unknown>
              route?: { cluster?: string; weighted_clusters?: { clusters: { name: string; weight: number }[] } }
            }[]
          }[]
        }
      }[]
    }
    const rcs = (p.dynamic_route_configs ?? []).map((r) => r.route_config)
    if (values.output === 'json') return void process.stdout.write(`${JSON.stringify(rcs, null, 2)}\n`)
    const rows = [['ROUTE CONFIG', 'VIRTUAL HOST', 'DOMAINS', 'MATCH', 'TO']]
    for (const rc of rcs) {
      for (const vh of rc.virtual_hosts ?? []) {
        for (const r of vh.routes ?? []) {
          const to =
            r.route?.cluster ??
            r.route?.weighted_clusters?.clusters.map((c) => `${c.name} ${c.weight}`).join(', ') ??
            '(local reply)'
          rows.push([
            rc.name,
            vh.name,
            vh.domains.slice(0, 2).join(',') + (vh.domains.length > 2 ? ',…' : ''),
            JSON.stringify(r.match),
            to,
          ])
        }
      }
    }
    return void process.stdout.write(table(rows))
  }
  if (type === 'clusters') {
    const p = part('ClustersConfigDump') as {
      static_clusters?: { cluster: Record<string, unknown> }[]
      dynamic_active_clusters?: { cluster: Record<string, unknown> }[]
    }
    const cs = [...(p.static_clusters ?? []), ...(p.dynamic_active_clusters ?? [])].map((c) => c.cluster)
    if (values.output === 'json') return void process.stdout.write(`${JSON.stringify(cs, null, 2)}\n`)
    return void process.stdout.write(
      table([
        ['NAME', 'TYPE', 'LB POLICY'],
        ...cs.map((c) => [String(c.name), String(c.type ?? 'STATIC'), String(c.lb_policy ?? 'ROUND_ROBIN')]),
      ]),
    )
  }
  const clusters = (await getJson(`http://${admin}/clusters?format=json`, 'the proxy admin endpoint')) as {
    cluster_statuses: {
      name: string
      host_statuses: {
        address: { socket_address: { address: string; port_value: number } }
        health_status: { eds_health_status: string }
        weight: number
        stats: { rq_active: number }
      }[]
    }[]
  }
  if (values.output === 'json') return void process.stdout.write(`${JSON.stringify(clusters, null, 2)}\n`)
  const rows = [['ENDPOINT', 'HEALTH', 'WEIGHT', 'ACTIVE', 'CLUSTER']]
  for (const c of clusters.cluster_statuses) {
    for (const h of c.host_statuses)
      rows.push([
        `${h.address.socket_address.address}:${h.address.socket_address.port_value}`,
        h.health_status.eds_health_status,
        String(h.weight),
        String(h.stats.rq_active),
        c.name,
      ])
  }
  process.stdout.write(table(rows))
}

const COMMANDS = [
  'demo',
  'up',
  'down',
  'status',
  'logs',
  'prometheus-config',
  'control',
  'apply',
  'get',
  'delete',
  'describe',
  'analyze',
  'proxy-status',
  'tap',
  'token',
  'proxy-config',
  'explain',
  'certs',
  'stat',
  'top',
  'edges',
  'graph',
  'dashboard',
  'proxy',
  'validate',
  'version',
  'completion',
]

export const COMPLETION_USAGE = `Usage: loom completion bash|zsh

Prints a shell completion script for loom's commands, kinds and proxy-config types.

Examples:
  source <(loom completion bash)
  loom completion zsh > ~/.zsh/loom-completion.zsh
`

export function completionCommand(argv: string[]): void {
  if (argv[0] === '--help' || argv[0] === '-h') return void process.stdout.write(COMPLETION_USAGE)
  const shell = argv[0] ?? 'bash'
  if (shell !== 'bash' && shell !== 'zsh')
    throw new LoomError(ErrorCodes.USAGE, 'usage: loom completion bash|zsh   (then: source <(loom completion bash))')
  const kinds =
    'virtualservice destinationrule gateway serviceentry workloadentry sidecar peerauthentication authorizationpolicy requestauthentication globalratelimit vs dr gw se we pa ap ra grl'
  const script = `# loom ${shell} completion: source <(loom completion ${shell})
_loom() {
  local cur=\${COMP_WORDS[COMP_CWORD]} prev=\${COMP_WORDS[1]}
  if [ "$COMP_CWORD" -eq 1 ]; then COMPREPLY=($(compgen -W "${COMMANDS.join(' ')}" -- "$cur")); return; fi
  case "$prev" in
    get|delete) COMPREPLY=($(compgen -W "${kinds}" -- "$cur")) ;;
    proxy-config) COMPREPLY=($(compgen -W "listeners routes clusters endpoints" -- "$cur")) ;;
    describe) COMPREPLY=($(compgen -W "service workload" -- "$cur")) ;;
    stat) COMPREPLY=($(compgen -W "deploy svc ns" -- "$cur")) ;;
    *) COMPREPLY=($(compgen -f -- "$cur")) ;;
  esac
}
${shell === 'zsh' ? 'autoload -U +X bashcompinit && bashcompinit\n' : ''}complete -F _loom loom
`
  process.stdout.write(script)
}
