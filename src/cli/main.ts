/** The `loom` command. */
import { parseArgs } from 'node:util'
import { spawn } from 'node:child_process'
import type { Bootstrap } from '../config/envoy.js'
import { ConfigError, ErrorCodes, LoomError } from '../core/errors.js'
import { log } from '../core/log.js'
import { VERSION } from '../core/version.js'
import { ProxyServer } from '../proxy/proxy.js'
import { exitWithParent } from '../runtime/parent.js'

const USAGE = `loom: a service mesh you can read, run on a laptop and trust in production

Usage:
  loom demo [--traffic]              run the Bookinfo demo: every service with its sidecar, behind a gateway
  loom up -f <dir|file>              run a mesh of local processes from manifests
  loom down                          stop the mesh loom up runs
  loom status                        its workloads, processes and sidecar sync state
  loom logs <workload>               a workload's (or its sidecar's) output
  loom prometheus-config             a prometheus.yml that scrapes every proxy of the mesh
  loom proxy -c <bootstrap.yaml>     run the proxy from an Envoy-style static bootstrap
  loom proxy --xds <host:port>       run the proxy with config from the control plane
  loom validate -c <bootstrap.yaml>  check a bootstrap without starting anything
  loom control                       run the control plane (config API, registry, xDS server)
  loom control rotate-root           replace the generated root CA; the previous one stays trusted for a while
  loom apply -f <file|dir|->         write Istio resources (VirtualService, DestinationRule, ...)
  loom get <kind> [name]             read them (-o table|yaml|json)
  loom delete <kind> <name>          delete one (or -f <file>)
  loom proxy-status                  connected proxies and whether their config is in sync
  loom tap <workload>                live requests through a workload's proxy
  loom token create                  a bootstrap token for a workload's first certificate
  loom analyze -f <file|dir>         find config problems before applying
  loom describe service <name>       a service's endpoints, subsets and routing rules on one page
  loom describe workload <name>      a workload's mTLS mode per port, outbound TLS, policies that apply
  loom proxy-config <type> <workload> what a proxy runs: listeners, routes, clusters, endpoints
  loom explain --from <workload> <url> why a request gets its answer: route, cluster, endpoints, policy
  loom certs                         every proxy's workload certificate and the mesh's trust bundle
  loom stat deploy|svc|ns [name]     traffic per workload, service or namespace: success, rps, latency, mTLS
  loom top [service]                 the busiest request paths, live
  loom edges                         who calls whom, with their identities and whether mTLS secures it
  loom graph [-o dot]                the service graph with rps and success per edge
  loom dashboard                     the web dashboard: live graph, services, config, proxies, live requests
  loom completion bash|zsh           shell completion (source <(loom completion bash))
  loom version                       print the version

Run 'loom <command> --help' for a command's options.
`

const PROXY_USAGE = `Usage: loom proxy -c <bootstrap.yaml|json> [options]
       loom proxy --xds <host:port> [--node <id>] [options]

Runs the Loom proxy from an Envoy v3 static bootstrap (static_resources: listeners and clusters; admin), from a
control plane over xDS (ADS: listeners, routes, clusters and endpoints, applied live), or from both.

Options:
  -c, --config <file>      bootstrap file, YAML or JSON
      --xds <host:port>    the control plane's xDS (gRPC ADS) address, e.g. 127.0.0.1:15010; several,
                           comma-separated, for replicas on one etcd (a:15010,b:15010): the proxy uses one
                           and moves to the next when its stream ends, serving its last config meanwhile
      --node <id>          node id (default: <kind>~<ip>~<hostname>.<namespace>~<namespace>.svc.cluster.local)
      --xds-protocol <p>   delta (incremental ADS, default) or sotw (state of the world)
      --on-demand          outbound virtual hosts on demand (VHDS, delta only): the proxy asks the control
                           plane for a host on its first request to it and holds only the hosts it uses
      --vhds               every outbound virtual host as its own resource (VHDS, delta only): a VirtualService
                           change then sends one small VirtualHost, not the whole route configuration
      --on-demand-idle-s <s>  drop an on-demand host this long after the last request that asked for it
                           (default 1800)
      --kind <kind>        sidecar (default) or gateway
      --namespace <ns>     the workload's namespace (default: default)
      --labels <k=v,...>   the workload's labels (select Sidecar, Gateway, policies...)
      --service-account <name>  the workload's service account (default: default)
      --ip <address>       the workload's IP (default: 127.0.0.1)
      --locality <r/z/s>   the proxy's locality, region[/zone[/subzone]] (default: the bootstrap's node.locality)
      --metadata <k=v>     extra node metadata for the control plane (repeat for several)
      --admin <host:port>  admin endpoint when there is no bootstrap (default: 127.0.0.1:15000; port 0 picks one)
      --identity-token-file <file>
                           get the workload's certificate (X.509-SVID) from the control plane with the bootstrap
                           token in this file (loom token create); renewed with the certificate itself, the key
                           never leaves the proxy. Needs --xds. See the admin endpoint's /certs
      --xds-ca <file>      speak TLS to the control plane (xDS, certificates) and verify its certificate with
                           these roots, PEM (loom control writes them to <data-dir>/ca/trust-bundle.pem); the mesh
                           trust bundle the proxy is pushed (ROOTCA) is trusted too, so a root rotation goes on
                           without a restart. Without it, plain text (loom control --xds-tls off)
      --path-stats <n>     keep the n busiest request paths this proxy sends (outbound and gateway connection
                           managers) at the admin endpoint's /stats/paths, for 'loom top' (default 0: none)
      --drain-time-s <n>   on SIGTERM/SIGINT, how long in-flight requests may take to finish (default 5)
      --log-level <level>  debug | info | warn | error (default info; also LOOM_LOG)
  -h, --help               show this help

Examples:
  loom proxy -c examples/proxy/front-proxy.yaml
  curl localhost:9901/ready            # 200 LIVE when serving (with --xds: once the first config and its
                                       # certificates are in place; 15 s at most)
  loom proxy --xds 127.0.0.1:15010 --namespace default --labels app=reviews,version=v1
`

const VALIDATE_USAGE = `Usage: loom validate -c <bootstrap.yaml|json> [--dynamic]

Checks an Envoy v3 bootstrap without starting anything: the schema (unknown fields, types, ranges) and the
checks across the document (unique names, route → cluster references, listener addresses), every problem in one
pass with its field path. Exit code 1 when there is any. (Istio resources: loom apply --dry-run, loom analyze.)

Options:
  -c, --config <file>  bootstrap file, YAML or JSON
      --dynamic        the proxy will also take config from a control plane: RDS and EDS references are allowed
  -h, --help           show this help

Examples:
  loom validate -c examples/proxy/front-proxy.yaml
  loom validate -c sidecar.yaml --dynamic
`

const VERSION_USAGE = `Usage: loom version

Prints Loom's version.

Examples:
  loom version
  loom --version
`

export async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv
  exitWithParent()
  try {
    switch (cmd) {
      case 'proxy':
        return await proxyCommand(rest, false)
      case 'validate':
        return await proxyCommand(rest, true)
      case 'control':
        return await (await import('./control-commands.js')).controlCommand(rest)
      case 'apply':
        return await (await import('./control-commands.js')).applyCommand(rest)
      case 'get':
        return await (await import('./control-commands.js')).getCommand(rest)
      case 'delete':
        return await (await import('./control-commands.js')).deleteCommand(rest)
      case 'up':
        return await (await import('./runtime-commands.js')).upCommand(rest)
      case 'demo':
        return await (await import('./runtime-commands.js')).demoCommand(rest)
      case 'down':
        return await (await import('./runtime-commands.js')).downCommand(rest)
      case 'status':
        return await (await import('./runtime-commands.js')).statusCommand(rest)
      case 'logs':
        return await (await import('./runtime-commands.js')).logsCommand(rest)
      case 'prometheus-config':
        return (await import('./prometheus-command.js')).prometheusConfigCommand(rest)
      case 'describe':
        return await (await import('./inspect-commands.js')).describeCommand(rest)
      case 'proxy-config':
        return await (await import('./inspect-commands.js')).proxyConfigCommand(rest)
      case 'stat':
        return await (await import('./telemetry-commands.js')).statCommand(rest)
      case 'top':
        return await (await import('./telemetry-commands.js')).topCommand(rest)
      case 'edges':
        return await (await import('./telemetry-commands.js')).edgesCommand(rest)
      case 'graph':
        return await (await import('./telemetry-commands.js')).graphCommand(rest)
      case 'certs':
        return await (await import('./certs-command.js')).certsCommand(rest)
      case 'completion':
        return (await import('./inspect-commands.js')).completionCommand(rest)
      case 'analyze':
        return await (await import('./control-commands.js')).analyzeCommand(rest)
      case 'tap':
        return await (await import('./tap-command.js')).tapCommand(rest)
      case 'proxy-status':
        return await (await import('./control-commands.js')).proxyStatusCommand(rest)
      case 'explain':
        return await (await import('./explain-command.js')).explainCommand(rest)
      case 'dashboard':
        return await (await import('./dashboard-command.js')).dashboardCommand(rest)
      case 'token':
        return await (await import('./control-commands.js')).tokenCommand(rest)
      case 'version':
      case '--version':
        if (rest[0] === '--help' || rest[0] === '-h') return void process.stdout.write(VERSION_USAGE)
        process.stdout.write(`loom ${VERSION}\n`)
        return
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(USAGE)
        return
      default:
        process.stderr.write(`loom: unknown command "${cmd}"\n\n${USAGE}`)
        process.exitCode = 2
    }
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`loom: ${err.message}\n`)
      process.exitCode = 1
    } else if (err instanceof LoomError) {
      process.stderr.write(`loom: ${err.message}\n`)
      process.exitCode = (err as { exitCode?: number }).exitCode ?? 1
    } else if ((err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') === true) {
      process.stderr.write(`loom: ${(err as Error).message}\nRun 'loom ${cmd} --help' for usage.\n`)
      process.exitCode = 2
    } else throw err
  }
}

async function proxyCommand(argv: string[], validateOnly: boolean): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      config: { type: 'string', short: 'c' },
      'drain-time-s': { type: 'string' },
      'path-stats': { type: 'string' },
      'log-level': { type: 'string' },
      json: { type: 'boolean' },
      dynamic: { type: 'boolean' },
      xds: { type: 'string' },
      'xds-protocol': { type: 'string' },
      'on-demand': { type: 'boolean' },
      vhds: { type: 'boolean' },
      'on-demand-idle-s': { type: 'string' },
      node: { type: 'string' },
      kind: { type: 'string' },
      namespace: { type: 'string' },
      labels: { type: 'string' },
      'service-account': { type: 'string' },
      ip: { type: 'string' },
      locality: { type: 'string' },
      metadata: { type: 'string', multiple: true },
      admin: { type: 'string' },
      'identity-token-file': { type: 'string' },
      'xds-ca': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  })
  if (values.help) {
    process.stdout.write(validateOnly ? VALIDATE_USAGE : PROXY_USAGE)
    return
  }
  if (values.config === undefined && (validateOnly || values.xds === undefined)) {
    process.stderr.write(`loom: -c <bootstrap file> or --xds <address> is required\n\n${PROXY_USAGE}`)
    process.exitCode = 2
    return
  }
  if (values['identity-token-file'] !== undefined && values.xds === undefined) {
    process.stderr.write('loom: --identity-token-file needs --xds (the control plane signs the certificate)\n')
    process.exitCode = 2
    return
  }
  if (values['log-level'] !== undefined) process.env.LOOM_LOG = values['log-level']
  const protocol = values['xds-protocol'] ?? 'delta'
  if (protocol !== 'sotw' && protocol !== 'delta') {
    process.stderr.write(`loom: --xds-protocol must be sotw or delta, not "${protocol}"\n`)
    process.exitCode = 2
    return
  }
  const idleS = Number(values['on-demand-idle-s'] ?? 1800)
  if (!Number.isFinite(idleS) || idleS < 0) {
    process.stderr.write(`loom: --on-demand-idle-s must be a number of seconds, not "${values['on-demand-idle-s']}"\n`)
    process.exitCode = 2
    return
  }
  if (values['on-demand'] === true && protocol !== 'delta') {
    process.stderr.write('loom: --on-demand needs delta xDS (--xds-protocol delta)\n')
    process.exitCode = 2
    return
  }
  let locality: { region: string; zone: string; sub_zone: string } | undefined
  if (values.locality !== undefined) {
    const parts = values.locality.split('/')
    if (parts.length > 3 || parts.some((p) => p === '')) {
      process.stderr.write(`loom: --locality must be region[/zone[/subzone]], not "${values.locality}"\n`)
      process.exitCode = 2
      return
    }
    locality = { region: parts[0]!, zone: parts[1] ?? '', sub_zone: parts[2] ?? '' }
  }
  const drainTimeMs = Number(values['drain-time-s'] ?? 5) * 1000
  const pathStats = Number(values['path-stats'] ?? 0)
  if (!Number.isInteger(pathStats) || pathStats < 0 || pathStats > 100_000) {
    process.stderr.write(`loom: --path-stats takes a number of paths (0 to 100000), not "${values['path-stats']}"\n`)
    process.exitCode = 2
    return
  }
  if (validateOnly) {
    // the schema and YAML code is loaded only here: a running proxy never pays for it
    const { readBootstrapFile } = await import('../config/load.js')
    const bootstrap = readBootstrapFile(values.config!, { dynamic: values.dynamic === true })
    const proxy = new ProxyServer(bootstrap, { file: values.config!, drainTimeMs })
    await proxy.close()
    process.stdout.write(values.json ? JSON.stringify(bootstrap) : `${values.config}: OK\n`)
    return
  }
  let bootstrap: Bootstrap = {}
  if (values.config !== undefined) {
    const b = await validateInChild(values.config, values.xds !== undefined)
    if (b === null) {
      process.exitCode = 1
      return
    }
    bootstrap = b
  }
  if (values.xds !== undefined && bootstrap.admin === undefined) {
    bootstrap = {
      ...bootstrap,
      admin: { address: { socket_address: hostPort(values.admin ?? '127.0.0.1:15000', '--admin') } },
    }
  }
  let roots: string | undefined
  if (values['xds-ca'] !== undefined) {
    if (values.xds === undefined) {
      process.stderr.write('loom: --xds-ca needs --xds (it verifies the control plane)\n')
      process.exitCode = 2
      return
    }
    const { readRootsFile } = await import('../proxy/xds-credentials.js')
    try {
      roots = readRootsFile(values['xds-ca'])
    } catch (err) {
      process.stderr.write(`loom: ${(err as Error).message}\n`)
      process.exitCode = 2
      return
    }
  }
  const proxy = new ProxyServer(bootstrap, { file: values.config ?? '<xds>', drainTimeMs, pathStats })
  // with a control plane, ready (LIVE) once its first config and secrets are in place
  const releaseInit = values.xds !== undefined ? proxy.holdLive('xds') : null
  await proxy.start()
  const credentials =
    roots === undefined
      ? undefined
      : (await import('../proxy/xds-credentials.js')).xdsChannelCredentials(roots, proxy.secrets)
  const xdsServers = (values.xds ?? '')
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x !== '')
  if (values.xds !== undefined) {
    const { holdUntilInitialized, startXds } = await import('../proxy/xds-start.js')
    const client = await startXds(proxy, {
      servers: xdsServers,
      credentials,
      protocol,
      ...(values['on-demand'] === true ? { onDemand: { idleMs: idleS * 1000 } } : {}),
      ...(values.vhds === true ? { vhds: true } : {}),
      node: values.node,
      kind: values.kind === 'gateway' ? 'gateway' : 'sidecar',
      namespace: values.namespace ?? 'default',
      labels: keyValues(values.labels ?? '', '--labels'),
      serviceAccount: values['service-account'] ?? 'default',
      ip: values.ip ?? '127.0.0.1',
      metadata: Object.fromEntries((values.metadata ?? []).map((m) => pair(m, '--metadata'))),
      ...(locality !== undefined
        ? { locality }
        : bootstrap.node?.locality !== undefined
          ? { locality: bootstrap.node.locality }
          : {}),
    })
    holdUntilInitialized(proxy, client, releaseInit!)
  }
  const tokenFile = values['identity-token-file']
  if (tokenFile !== undefined && values.xds !== undefined) {
    const { IdentityClient } = await import('../proxy/identity/client.js')
    const identity = new IdentityClient({ server: xdsServers, credentials, tokenFile, store: proxy.secrets })
    proxy.identity = identity
    identity.start()
  }
  log('info', 'proxy', 'ready', { admin: proxy.adminAddress, listeners: proxy.listeners.map((l) => l.address) })
  let stopping = false
  const stop = (signal: string) => {
    if (stopping) {
      process.exit(1)
    }
    stopping = true
    log('info', 'proxy', 'draining', { signal, drain_time_ms: drainTimeMs })
    void proxy.shutdown().then(() => process.exit(0))
  }
  process.on('SIGTERM', () => stop('SIGTERM'))
  process.on('SIGINT', () => stop('SIGINT'))
}

/**
 * Validates the bootstrap in a short-lived child process (`loom validate --json`) and returns the validated
 * document; the child prints any errors itself. The YAML parser and the schema code cost a sidecar several MB of
 * resident memory that it would never use again after startup, so they run, and exit, elsewhere.
 */
function validateInChild(file: string, dynamic: boolean): Promise<Bootstrap | null> {
  return new Promise((resolve, reject) => {
    const args = [process.argv[1]!, 'validate', '--json', '-c', file, ...(dynamic ? ['--dynamic'] : [])]
    const child = spawn(process.execPath, args, {
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    const chunks: Buffer[] = []
    child.stdout.on('data', (c: Buffer) => chunks.push(c))
    child.on('error', reject)
    child.on('close', (code) => {
      if (code !== 0) return resolve(null)
      resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')) as Bootstrap)
    })
  })
}

/** `host:port` → a socket address. */
function hostPort(text: string, flag: string): { address: string; port_value: number } {
  const m = /^(.*):(\d{1,5})$/.exec(text)
  if (m === null || Number(m[2]) > 65535)
    throw new LoomError(ErrorCodes.USAGE, `${flag} needs host:port, got "${text}"`)
  return { address: m[1]!.replace(/^\[(.*)\]$/, '$1'), port_value: Number(m[2]) }
}

/** `a=1,b=2` → { a: '1', b: '2' } */
function keyValues(text: string, flag: string): Record<string, string> {
  const out: Record<string, string> = {}
  for (const part of text.split(',')) {
    if (part.trim() === '') continue
    const i = part.indexOf('=')
    if (i <= 0)
      throw new LoomError(ErrorCodes.USAGE, `${flag} takes key=value pairs separated by commas, got "${part}"`)
    out[part.slice(0, i).trim()] = part.slice(i + 1).trim()
  }
  return out
}

/** `k=v` → [k, v] (the value may contain commas and colons). */
function pair(text: string, flag: string): [string, string] {
  const i = text.indexOf('=')
  if (i <= 0) throw new LoomError(ErrorCodes.USAGE, `${flag} takes key=value, got "${text}"`)
  return [text.slice(0, i).trim(), text.slice(i + 1).trim()]
}
