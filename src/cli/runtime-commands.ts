/** `loom up`, `down`, `status`, `logs` and `demo`: a local mesh of processes. */
import { existsSync, readFileSync, rmSync, statSync, watch } from 'node:fs'
import { resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { PATH_NORMALIZATIONS } from '../control/translate/scope.js'
import { ErrorCodes, LoomError } from '../core/errors.js'
import {
  alive,
  LocalMesh,
  readState,
  reapLeftovers,
  removeLeftoverNetwork,
  StoppedError,
  statePath,
  type UpState,
  workloadName,
} from '../runtime/up.js'
import { table } from './table.js'

export const UP_USAGE = `Usage: loom up -f <dir|file> [--data-dir DIR] [--api-port N] [--xds-port N] [--gateway-port N]
               [--path-normalization NONE|BASE|MERGE_SLASHES|DECODE_AND_MERGE_SLASHES] [--mesh-config FILE]
               [--transparent]

Runs a mesh of local processes: the control plane, each Workload's process with its sidecar, and the gateways the
config declares. Manifests hold Istio resources (applied to the control plane) and Loom Workloads:

  apiVersion: loom.dev/v1
  kind: Workload
  metadata: { name: reviews-v1 }
  spec:
    command: [node, reviews.js]          # started after its sidecar is ready
    labels: { app: reviews, version: v1 }
    serviceAccount: bookinfo-reviews
    ports: [{ name: http, port: 9080 }]  # the process listens on $PORT; peers call http://reviews:9080
    env: { ENABLE_RATINGS: "false" }     # plus HTTP_PROXY: its sidecar

Ctrl-C (or 'loom down') stops everything: applications, then sidecars, gateways, the control plane.

Options:
  -f, --file <dir|file>   manifests (required)
      --data-dir <dir>    state, logs and the config store (default: ./.loom)
      --api-port <n>      control plane API port (default 15080 if free)
      --xds-port <n>      control plane xDS port (default 15010 if free)
      --gateway-port <n>  local port for the first gateway server port (default: the same port if free)
      --path-normalization <setting>
                          how every proxy normalizes request paths (the control plane's flag; default BASE)
      --mesh-config <file>  Istio's MeshConfig for the control plane (its --mesh-config: extensionProviders for
                          CUSTOM authorization, trustDomain, ...)
      --transparent       Linux, as root: each workload in a network namespace of its own, its traffic captured
                          by iptables as Istio's init container does (no HTTP_PROXY; apps call http://reviews:9080
                          and are reachable only through their sidecars); needs ip, iptables and setpriv

Examples:
  loom up -f ./mesh
  loom up -f ./mesh --data-dir /tmp/mesh --api-port 15081 --xds-port 15011
`

export const DEMO_USAGE = `Usage: loom demo [--traffic] [--port N] [--data-dir DIR]

Runs Istio's Bookinfo application (productpage, details, reviews v1/v2/v3, ratings), each process with its Loom
sidecar, behind an ingress gateway, and prints the URLs. Every proxy writes an access log line per request to
<data-dir>/logs/<workload>.sidecar.log (loom logs reviews-v2 --sidecar). Then try, from another terminal:

  loom tap reviews-v2                                                                # live requests

  loom apply -f examples/bookinfo/networking/destination-rule-all.yaml
  loom apply -f examples/bookinfo/networking/virtual-service-reviews-v1.yaml        # no stars
  loom apply -f examples/bookinfo/networking/virtual-service-reviews-jason-v2.yaml  # log in as jason: black stars
  loom get vs; loom proxy-status
  loom explain --from productpage-v1 http://reviews:9080/reviews/0 -H 'end-user: jason'   # why v2?

Options:
      --traffic         send a gentle stream of requests (2 per second) to the product page
      --port <n>        the gateway's local port (default 8080 if free)
      --data-dir <dir>  state and logs (default: ./.loom/demo)
      --api-port <n>    the control plane's API port (default 15080 if free)
      --xds-port <n>    the control plane's xDS port (default 15010 if free)
      --mesh-config <file>  the control plane's MeshConfig (default examples/bookinfo/mesh-config.yaml: access
                        logs, and the decision record, x-loom-explain, for this machine and the Bookinfo workloads)

Examples:
  loom demo
  loom demo --traffic --port 9080
`

function progress(line: string): void {
  process.stderr.write(`loom: ${line}\n`)
}

function printState(s: UpState, extra = ''): void {
  // transparent mode: each workload's address and network namespace
  const captured = s.workloads.some((w) => w.netns !== undefined)
  const rows = [
    [
      'WORKLOAD',
      'SERVICE',
      'APP PID',
      'SIDECAR PID',
      'APP PORT',
      'OUTBOUND',
      ...(captured ? ['ADDRESS', 'NAMESPACE'] : []),
    ],
    ...s.workloads.map((w) => [
      workloadName(w),
      `${w.service.split('.')[0]}:${Object.keys(w.inbound).join(',')}`,
      String(w.appPid ?? '-'),
      w.sidecar === false ? 'none' : String(w.sidecarPid ?? '-'),
      String(w.appPort),
      w.sidecar === false ? '-' : String(w.outboundPort),
      ...(captured ? [w.address ?? '-', w.netns ?? '-'] : []),
    ]),
  ]
  process.stdout.write(table(rows))
  for (const g of s.gateways) {
    for (const [p, local] of Object.entries(g.ports))
      process.stdout.write(`gateway ${g.name}: port ${p} → http://127.0.0.1:${local}\n`)
  }
  process.stdout.write(
    `control plane: api http://${s.api}  xds ${s.xds}  (export LOOM_SERVER=${s.api})\ndashboard: http://${s.api}/dashboard/\n${extra}`,
  )
}

async function runUp(
  opts: {
    file: string
    dataDir: string
    apiPort?: number
    xdsPort?: number
    gatewayPort?: number
    meshConfig?: string
    transparent?: boolean
  },
  after?: (s: UpState, mesh: LocalMesh) => void,
): Promise<void> {
  const mesh = new LocalMesh({ ...opts, progress })
  let signals = 0
  const stop = () => {
    // a second Ctrl-C stops at once: every process gets SIGKILL
    if (++signals > 1) {
      progress('stopping now (SIGKILL)')
      mesh.kill()
      process.exit(1)
    }
    progress('shutting down')
    void mesh.down().then(() => process.exit(0))
  }
  process.on('SIGINT', stop)
  process.on('SIGTERM', stop)
  // the terminal went away: stop as on Ctrl-C (applications run in process groups of their own and get no SIGHUP)
  process.on('SIGHUP', stop)
  let state: UpState
  try {
    state = await mesh.up()
  } catch (err) {
    // a stop asked for during start-up: the signal handler finishes it and exits
    if (err instanceof StoppedError) return
    progress(`failed: ${(err as Error).message}`)
    await mesh.down()
    process.exit(1)
  }
  after?.(state, mesh)
}

function num(v: string | undefined, flag: string): number | undefined {
  if (v === undefined) return undefined
  const n = Number(v)
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new LoomError(ErrorCodes.USAGE, `${flag} must be a port number`)
  return n
}

export async function upCommand(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      file: { type: 'string', short: 'f' },
      'data-dir': { type: 'string' },
      'api-port': { type: 'string' },
      'xds-port': { type: 'string' },
      'gateway-port': { type: 'string' },
      'path-normalization': { type: 'string' },
      'mesh-config': { type: 'string' },
      transparent: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (values.help) return void process.stdout.write(UP_USAGE)
  if (values.file === undefined) throw new LoomError(ErrorCodes.USAGE, `-f <dir|file> is required\n\n${UP_USAGE}`)
  const normalization = values['path-normalization']
  if (normalization !== undefined && !(PATH_NORMALIZATIONS as readonly string[]).includes(normalization))
    throw new LoomError(
      ErrorCodes.USAGE,
      `--path-normalization must be one of ${PATH_NORMALIZATIONS.join(', ')}, got "${normalization}"`,
    )
  await runUp(
    {
      file: values.file,
      dataDir: values['data-dir'] ?? '.loom',
      apiPort: num(values['api-port'], '--api-port') ?? 15080,
      xdsPort: num(values['xds-port'], '--xds-port') ?? 15010,
      ...(values['gateway-port'] === undefined ? {} : { gatewayPort: num(values['gateway-port'], '--gateway-port')! }),
      ...(normalization === undefined ? {} : { pathNormalization: normalization }),
      ...(values['mesh-config'] === undefined ? {} : { meshConfig: resolve(values['mesh-config']) }),
      ...(values.transparent === true ? { transparent: true } : {}),
    },
    (s) => {
      printState(s, `mesh is up; Ctrl-C or 'loom down --data-dir ${s.dataDir}' stops it\n`)
      process.stdout.write(`{"msg":"up","api":"${s.api}"}\n`)
    },
  )
}

export async function demoCommand(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      traffic: { type: 'boolean' },
      port: { type: 'string' },
      'data-dir': { type: 'string' },
      'api-port': { type: 'string' },
      'xds-port': { type: 'string' },
      'mesh-config': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (values.help) return void process.stdout.write(DEMO_USAGE)
  const example = (p: string) => {
    const fromDist = new URL(`../../examples/bookinfo/${p}`, import.meta.url).pathname
    return existsSync(fromDist) ? fromDist : new URL(`../../../examples/bookinfo/${p}`, import.meta.url).pathname
  }
  const file = example('mesh')
  await runUp(
    {
      file,
      dataDir: values['data-dir'] ?? '.loom/demo',
      apiPort: num(values['api-port'], '--api-port') ?? 15080,
      xdsPort: num(values['xds-port'], '--xds-port') ?? 15010,
      gatewayPort: num(values.port, '--port') ?? 8080,
      // access logs on, as Istio's demo profile has them, and the decision record (examples/bookinfo/mesh-config.yaml)
      meshConfig: values['mesh-config'] === undefined ? example('mesh-config.yaml') : resolve(values['mesh-config']),
    },
    (s) => {
      const gw = s.gateways[0]
      const port = gw === undefined ? 0 : Object.values(gw.ports)[0]
      const url = `http://127.0.0.1:${port}/productpage`
      printState(
        s,
        `\nBookinfo is running:\n  product page   ${url}\n  API            http://127.0.0.1:${port}/api/v1/products/0/reviews\n  control plane  LOOM_SERVER=${s.api} loom get vs | loom proxy-status\n  dashboard      http://${s.api}/dashboard/\n\nCtrl-C stops everything.\n`,
      )
      process.stdout.write(
        `{"msg":"demo","productpage":"${url}","api":"${s.api}","dashboard":"http://${s.api}/dashboard/"}\n`,
      )
      if (values.traffic) {
        const t = setInterval(
          () =>
            void fetch(url)
              .then((r) => r.arrayBuffer())
              .catch(() => {}),
          500,
        )
        t.unref()
        setInterval(() => {}, 1 << 30)
      }
    },
  )
}

function requireState(dataDir: string): UpState {
  const s = readState(dataDir)
  if (s === null)
    throw new LoomError(
      ErrorCodes.USAGE,
      `no mesh is running from ${dataDir} (no ${statePath(dataDir)}); start one with 'loom up -f <dir>'`,
    )
  return s
}

export async function downCommand(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: { 'data-dir': { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  })
  if (values.help)
    return void process.stdout.write(
      'Usage: loom down [--data-dir DIR]\n\nStops the mesh `loom up` runs from DIR (default ./.loom).\n\n' +
        'Examples:\n  loom down\n  loom down --data-dir /tmp/mesh\n',
    )
  const dataDir = values['data-dir'] ?? '.loom'
  const s = requireState(dataDir)
  if (!alive(s.pid)) {
    // loom up was killed without stopping its processes: stop what is left of them
    const left = await reapLeftovers(s)
    // transparent mode: the namespaces, veths and rules it made
    removeLeftoverNetwork(dataDir)
    rmSync(statePath(dataDir), { force: true })
    process.stdout.write(
      left.length === 0
        ? `loom up (pid ${s.pid}) was not running; nothing was left\n`
        : `loom up (pid ${s.pid}) was not running; stopped ${left.length} process(es) it left (pids ${left.join(', ')})\n`,
    )
    return
  }
  process.kill(s.pid, 'SIGTERM')
  // the mesh stops in order (applications get up to 5 s, proxies drain): give it time
  const deadline = Date.now() + 30_000
  while (alive(s.pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100))
  if (alive(s.pid)) {
    process.stdout.write(`loom up (pid ${s.pid}) is still stopping\n`)
    process.exitCode = 1
  } else process.stdout.write('mesh stopped\n')
}

export async function statusCommand(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      'data-dir': { type: 'string' },
      output: { type: 'string', short: 'o' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (values.help)
    return void process.stdout.write(
      'Usage: loom status [--data-dir DIR] [-o table|json]\n\nWorkloads and gateways of the running local mesh: processes, ports, and the config sync state of every proxy.\n\n' +
        'Examples:\n  loom status\n  loom status --data-dir .loom/demo -o json\n',
    )
  const s = requireState(values['data-dir'] ?? '.loom')
  let sync = new Map<string, string>()
  try {
    const r = await fetch(`http://${s.api}/api/v1/proxy-status`, { signal: AbortSignal.timeout(3000) })
    const nodes = (await r.json()) as { nodeId: string; perType: { state: string }[] }[]
    sync = new Map(
      nodes.map((n) => [
        n.nodeId,
        n.perType.every((t) => t.state === 'SYNCED') ? 'SYNCED' : n.perType.map((t) => t.state).join('/'),
      ]),
    )
  } catch {
    // control plane down
  }
  const portList = (m: Record<string, number>) =>
    Object.entries(m)
      .map(([a, b]) => (a === String(b) ? a : `${a}→${b}`))
      .join(',')
  const rows = s.workloads.map((w) => ({
    workload: workloadName(w),
    app: alive(w.appPid) ? `running (${w.appPid})` : 'down',
    sidecar: w.sidecar === false ? 'none' : alive(w.sidecarPid) ? `running (${w.sidecarPid})` : 'down',
    sync: w.sidecar === false ? '-' : (sync.get(w.nodeId) ?? 'DISCONNECTED'),
    ports:
      w.sidecar === false
        ? `app ${w.appPort}`
        : `app ${w.appPort}, inbound ${Object.values(w.inbound).join(',')}, outbound ${w.outboundPort}`,
  }))
  const gateways = s.gateways.map((g) => ({
    gateway: g.name,
    proxy: alive(g.pid) ? `running (${g.pid})` : 'down',
    sync: sync.get(g.nodeId) ?? 'DISCONNECTED',
    ports: `${portList(g.ports)}, admin ${g.adminPort}`,
  }))
  if (values.output === 'json')
    return void process.stdout.write(`${JSON.stringify({ ...s, status: rows, gatewayStatus: gateways }, null, 2)}\n`)
  if (s.phase === 'starting') process.stdout.write(`the mesh is starting (loom up pid ${s.pid})\n`)
  writeTable([
    ['WORKLOAD', 'APP', 'SIDECAR', 'CONFIG', 'PORTS'],
    ...rows.map((r) => [r.workload, r.app, r.sidecar, r.sync, r.ports]),
  ])
  if (gateways.length > 0) {
    process.stdout.write('\n')
    writeTable([['GATEWAY', 'PROXY', 'CONFIG', 'PORTS'], ...gateways.map((g) => [g.gateway, g.proxy, g.sync, g.ports])])
  }
}

function writeTable(rows: string[][]): void {
  process.stdout.write(table(rows))
}

export async function logsCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      'data-dir': { type: 'string' },
      follow: { type: 'boolean', short: 'f' },
      sidecar: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (values.help || positionals[0] === undefined) {
    return void process.stdout.write(
      "Usage: loom logs <workload> [-f] [--sidecar] [--data-dir DIR]\n\nA workload's output (or its sidecar's); -f follows it.\n\n" +
        'Examples:\n  loom logs reviews-v1\n  loom logs reviews-v1 --sidecar -f\n',
    )
  }
  const s = requireState(values['data-dir'] ?? '.loom')
  const name = positionals[0]
  const w = s.workloads.find((x) => workloadName(x) === name) ?? s.workloads.find((x) => x.name === name)
  const g = s.gateways.find((x) => x.name === name)
  if (w === undefined && g === undefined) {
    throw new LoomError(
      ErrorCodes.USAGE,
      `no workload "${name}"; workloads: ${[...s.workloads.map(workloadName), ...s.gateways.map((x) => x.name)].join(', ')}`,
    )
  }
  if (values.sidecar && w?.sidecar === false)
    throw new LoomError(ErrorCodes.USAGE, `workload ${name} runs without a sidecar (sidecar.istio.io/inject: "false")`)
  const file = w !== undefined ? (values.sidecar ? w.sidecarLog : w.appLog) : g!.log
  let pos = 0
  const dump = () => {
    const size = statSync(file).size
    if (size < pos) pos = 0
    if (size === pos) return
    const buf = readFileSync(file)
    process.stdout.write(buf.subarray(pos))
    pos = buf.length
  }
  dump()
  if (!values.follow) return
  watch(file, () => dump())
  await new Promise(() => {})
}
