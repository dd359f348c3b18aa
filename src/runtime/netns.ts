/**
 * The network of `loom up --transparent` (Linux, root): one network namespace per workload, as a Kubernetes pod
 * has, with Istio's traffic capture inside it.
 *
 * - A bridge `lb<tag>` in the root namespace holds `10.255.<n>.1/24`; each workload's namespace `loom-<tag>-<i>`
 *   gets one end of a veth pair (the other end on the bridge) with `10.255.<n>.<i+2>`, and a default route via the
 *   bridge. `<tag>` comes from the data dir, so what a killed `loom up` left is found and removed by the next one
 *   (and by `loom down`); `<n>` is the first /24 of 10.255.0.0/16 that no route or address of the host overlaps.
 * - Service names resolve through `/etc/netns/<namespace>/hosts` (`ip netns exec` bind-mounts it on /etc/hosts):
 *   each service of the mesh at a virtual IP (10.255.<n>.200 and up) that never leaves the namespace, since
 *   every outbound connection is captured.
 * - iptables rules as Istio's istio-iptables writes them (nat table; chains ISTIO_INBOUND, ISTIO_IN_REDIRECT,
 *   ISTIO_OUTPUT, ISTIO_REDIRECT): inbound TCP to the sidecar's 15006, outbound TCP to its 15001; the sidecar's own
 *   connections are told apart by its user and group (it runs as uid/gid 1337, Istio's istio-proxy), loopback
 *   stays loopback, and the excluded ports and address ranges of the workload are left alone.
 */
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { chmodSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { ErrorCodes, LoomError } from '../core/errors.js'
import { loadOriginalDst } from '../proxy/listener/original-dst.js'

/** the sidecar's user and group in transparent mode (Istio's istio-proxy uid and gid) */
export const PROXY_UID = 1337
export const PROXY_GID = 1337
/** where iptables sends captured connections (Istio's ports) */
export const OUTBOUND_CAPTURE_PORT = 15001
export const INBOUND_CAPTURE_PORT = 15006

/** The annotations (on a Workload's metadata, as on a pod) that leave ports and address ranges uncaptured. */
export const EXCLUDE_INBOUND_PORTS = 'traffic.sidecar.istio.io/excludeInboundPorts'
export const EXCLUDE_OUTBOUND_PORTS = 'traffic.sidecar.istio.io/excludeOutboundPorts'
export const EXCLUDE_OUTBOUND_IP_RANGES = 'traffic.sidecar.istio.io/excludeOutboundIPRanges'

export interface Capture {
  /** inbound ports not sent to the sidecar (its admin port among them) */
  excludeInboundPorts: number[]
  excludeOutboundPorts: number[]
  excludeOutboundCidrs: string[]
}

function run(cmd: string, args: string[], input?: string): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'], input })
  } catch (err) {
    const e = err as { stderr?: string; message: string }
    throw new LoomError(
      ErrorCodes.LISTEN,
      `transparent mode: ${cmd} ${args.join(' ')} failed: ${(e.stderr ?? '').trim() || e.message}`,
    )
  }
}

function quiet(cmd: string, args: string[]): void {
  try {
    execFileSync(cmd, args, { stdio: 'ignore' })
  } catch {
    // already gone
  }
}

function has(cmd: string): boolean {
  try {
    execFileSync(cmd, ['--version'], { stdio: 'ignore' })
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ENOENT'
  }
}

/** Throws saying what is missing when this host cannot run transparent mode (Linux, root, ip, iptables, the addon). */
export function checkTransparentSupport(): void {
  if (process.platform !== 'linux')
    throw new LoomError(ErrorCodes.USAGE, '--transparent needs Linux (network namespaces and iptables)')
  if (process.getuid?.() !== 0)
    throw new LoomError(
      ErrorCodes.USAGE,
      '--transparent needs root: it creates network namespaces, veth pairs and iptables rules (run loom up as root, or without --transparent)',
    )
  const missing = ['ip', 'iptables', 'iptables-restore', 'setpriv'].filter((c) => !has(c))
  if (missing.length > 0)
    throw new LoomError(
      ErrorCodes.USAGE,
      `--transparent needs ${missing.join(', ')} (Debian: apt-get install iproute2 iptables util-linux)`,
    )
  // the sidecars read SO_ORIGINAL_DST through the native addon: say now, not from every sidecar, if it is missing
  try {
    loadOriginalDst()
  } catch (err) {
    throw new LoomError(ErrorCodes.USAGE, `--transparent: ${(err as Error).message}`)
  }
}

/** The names of one mesh's network, from its data dir. */
export function netNames(dataDir: string): { tag: string; bridge: string; nsPrefix: string; vethPrefix: string } {
  const tag = createHash('sha256').update(dataDir).digest('hex').slice(0, 4)
  return { tag, bridge: `lb${tag}`, nsPrefix: `loom-${tag}-`, vethPrefix: `lv${tag}` }
}

/** IPv4 a.b.c.d/len → [first, last] as numbers. */
function range(cidr: string): [number, number] | null {
  const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+)(?:\/(\d+))?$/.exec(cidr)
  if (m === null) return null
  const ip = ((+m[1]! << 24) >>> 0) + (+m[2]! << 16) + (+m[3]! << 8) + +m[4]!
  const len = m[5] === undefined ? 32 : +m[5]
  const size = len === 0 ? 2 ** 32 : 2 ** (32 - len)
  const first = Math.floor(ip / size) * size
  return [first, first + size - 1]
}

/** Every IPv4 range the host routes or holds (to pick a /24 that clashes with none), except `own` bridge's. */
function hostRanges(ownBridge: string): [number, number][] {
  const out: [number, number][] = []
  const lines = [
    ...run('ip', ['-4', 'route', 'show', 'table', 'all']).split('\n'),
    ...run('ip', ['-4', '-o', 'addr', 'show']).split('\n'),
  ]
  for (const line of lines) {
    if (line.includes(` ${ownBridge} `) || line.includes(`dev ${ownBridge}`)) continue
    for (const word of line.split(/\s+/)) {
      if (!/^\d+\.\d+\.\d+\.\d+(\/\d+)?$/.test(word) || word.startsWith('0.0.0.0') || word === 'default') continue
      const r = range(word)
      if (r !== null && r[1] - r[0] < 2 ** 24) out.push(r)
    }
  }
  return out
}

/** The first free 10.255.<n>.0/24, starting at one the tag picks (two meshes of two data dirs rarely collide). */
function pickSubnet(tag: string, bridge: string): number {
  const taken = hostRanges(bridge)
  const start = Number.parseInt(tag, 16) % 200
  for (let k = 0; k < 250; k++) {
    const n = (start + k) % 250
    const [a, b] = range(`10.255.${n}.0/24`)!
    if (!taken.some(([x, y]) => x <= b && a <= y)) return n
  }
  throw new LoomError(ErrorCodes.LISTEN, 'transparent mode: no free /24 in 10.255.0.0/16 (every one is routed)')
}

export interface WorkloadNet {
  /** the network namespace's name */
  ns: string
  /** the workload's address */
  ip: string
}

/** The iptables-restore input of a workload's namespace (nat table), as istio-iptables writes it. */
export function captureRules(c: Capture, uid = PROXY_UID, gid = PROXY_GID): string {
  const l: string[] = [
    '*nat',
    ':ISTIO_INBOUND - [0:0]',
    ':ISTIO_IN_REDIRECT - [0:0]',
    ':ISTIO_OUTPUT - [0:0]',
    ':ISTIO_REDIRECT - [0:0]',
    '-A PREROUTING -p tcp -j ISTIO_INBOUND',
    '-A OUTPUT -p tcp -j ISTIO_OUTPUT',
  ]
  for (const p of c.excludeInboundPorts) l.push(`-A ISTIO_INBOUND -p tcp --dport ${p} -j RETURN`)
  l.push('-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT')
  l.push(`-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports ${INBOUND_CAPTURE_PORT}`)
  l.push(`-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports ${OUTBOUND_CAPTURE_PORT}`)
  // the sidecar's connections to its own workload's address are inbound ones; the application's loopback stays
  l.push('-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN')
  l.push(`-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --uid-owner ${uid} -j ISTIO_IN_REDIRECT`)
  l.push(`-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner ${uid} -j RETURN`)
  l.push(`-A ISTIO_OUTPUT -m owner --uid-owner ${uid} -j RETURN`)
  l.push(`-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --gid-owner ${gid} -j ISTIO_IN_REDIRECT`)
  l.push(`-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner ${gid} -j RETURN`)
  l.push(`-A ISTIO_OUTPUT -m owner --gid-owner ${gid} -j RETURN`)
  l.push('-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN')
  for (const cidr of c.excludeOutboundCidrs) l.push(`-A ISTIO_OUTPUT -d ${cidr} -j RETURN`)
  for (const p of c.excludeOutboundPorts) l.push(`-A ISTIO_OUTPUT -p tcp --dport ${p} -j RETURN`)
  l.push('-A ISTIO_OUTPUT -j ISTIO_REDIRECT')
  l.push('COMMIT', '')
  return l.join('\n')
}

/** `"8080, 9090"` → [8080, 9090]; `"10.0.0.0/8,1.2.3.4"` → CIDRs; throws naming the annotation. */
export function parseCapture(
  annotations: Record<string, string>,
  where: string,
): Omit<Capture, 'excludeInboundPorts'> & { excludeInboundPorts: number[] } {
  const list = (key: string) =>
    (annotations[key] ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== '')
  const ports = (key: string) =>
    list(key).map((s) => {
      const n = Number(s)
      if (!Number.isInteger(n) || n < 1 || n > 65535)
        throw new LoomError(ErrorCodes.CONFIG_INVALID, `${where}: metadata.annotations["${key}"]: "${s}" is not a port`)
      return n
    })
  const cidrs = list(EXCLUDE_OUTBOUND_IP_RANGES).map((s) => {
    if (range(s) === null)
      throw new LoomError(
        ErrorCodes.CONFIG_INVALID,
        `${where}: metadata.annotations["${EXCLUDE_OUTBOUND_IP_RANGES}"]: "${s}" is not an IPv4 CIDR`,
      )
    return s.includes('/') ? s : `${s}/32`
  })
  return {
    excludeInboundPorts: ports(EXCLUDE_INBOUND_PORTS),
    excludeOutboundPorts: ports(EXCLUDE_OUTBOUND_PORTS),
    excludeOutboundCidrs: cidrs,
  }
}

/** Removes every namespace, veth, bridge, rule and hosts file of the mesh of `dataDir` (also what a crash left). */
export function removeNetwork(dataDir: string): string[] {
  const { bridge, nsPrefix, vethPrefix } = netNames(dataDir)
  const removed: string[] = []
  let names: string[] = []
  try {
    names = run('ip', ['netns', 'list'])
      .split('\n')
      .map((l) => l.split(' ')[0]!)
      .filter((n) => n.startsWith(nsPrefix))
  } catch {
    // no ip: nothing of ours can exist
    return removed
  }
  for (const ns of names) {
    quiet('ip', ['netns', 'del', ns])
    removed.push(ns)
  }
  try {
    for (const e of readdirSync('/etc/netns'))
      if (e.startsWith(nsPrefix)) rmSync(join('/etc/netns', e), { recursive: true, force: true })
  } catch {
    // no /etc/netns
  }
  // a veth whose namespace is gone is gone with it; one left by a failed set-up is not
  for (const line of run('ip', ['-o', 'link', 'show']).split('\n')) {
    const name = /^\d+: ([^:@]+)/.exec(line)?.[1]
    if (name !== undefined && (name.startsWith(vethPrefix) || name === bridge)) {
      quiet('ip', ['link', 'del', name])
      removed.push(name)
    }
  }
  const rule = ['FORWARD', '-i', bridge, '-o', bridge, '-j', 'ACCEPT', '-m', 'comment', '--comment', `loom ${bridge}`]
  for (let i = 0; i < 4; i++) {
    try {
      execFileSync('iptables', ['-D', ...rule], { stdio: 'ignore' })
    } catch {
      break
    }
  }
  try {
    rmSync(join('/run/loom', netNames(dataDir).tag), { recursive: true, force: true })
  } catch {
    // not root: nothing of it can be removed here (and `loom up --transparent` ran as root)
  }
  return removed
}

/** A mesh's network: the bridge, then one namespace per workload. */
export class MeshNetwork {
  readonly dataDir: string
  readonly bridge: string
  readonly nsPrefix: string
  readonly vethPrefix: string
  readonly tag: string
  /** the bridge's address: the root namespace as the workloads see it (the control plane listens here) */
  gateway = ''
  private subnet = -1
  private nextWorkload = 2
  private nextVip = 200
  private readonly vips = new Map<string, string>()

  constructor(dataDir: string) {
    this.dataDir = dataDir
    const n = netNames(dataDir)
    this.bridge = n.bridge
    this.nsPrefix = n.nsPrefix
    this.vethPrefix = n.vethPrefix
    this.tag = n.tag
  }

  /** The bridge and its address. */
  create(): void {
    this.subnet = pickSubnet(this.tag, this.bridge)
    this.gateway = `10.255.${this.subnet}.1`
    run('ip', ['link', 'add', this.bridge, 'type', 'bridge'])
    run('ip', ['addr', 'add', `${this.gateway}/24`, 'dev', this.bridge])
    run('ip', ['link', 'set', this.bridge, 'up'])
    // bridged traffic between namespaces must not meet a host's FORWARD policy of DROP (br_netfilter)
    run('iptables', [
      '-I',
      'FORWARD',
      '-i',
      this.bridge,
      '-o',
      this.bridge,
      '-j',
      'ACCEPT',
      '-m',
      'comment',
      '--comment',
      `loom ${this.bridge}`,
    ])
  }

  /** The virtual IP of a service (`reviews.default.svc.cluster.local`), the same for every namespace. */
  vip(host: string): string {
    let ip = this.vips.get(host)
    if (ip === undefined) {
      if (this.nextVip > 254)
        throw new LoomError(ErrorCodes.CONFIG_INVALID, 'transparent mode: more than 55 services (virtual IPs)')
      ip = `10.255.${this.subnet}.${this.nextVip++}`
      this.vips.set(host, ip)
    }
    return ip
  }

  /** A namespace for a workload, its veth on the bridge, its address and default route, and its capture rules. */
  addWorkload(capture: Capture): WorkloadNet {
    const i = this.nextWorkload++
    if (i > 199) throw new LoomError(ErrorCodes.CONFIG_INVALID, 'transparent mode: more than 198 workloads')
    const ns = `${this.nsPrefix}${i}`
    const ip = `10.255.${this.subnet}.${i}`
    const host = `${this.vethPrefix}${i}`
    const peer = `${this.vethPrefix}p${i}`
    run('ip', ['netns', 'add', ns])
    run('ip', ['link', 'add', host, 'type', 'veth', 'peer', 'name', peer])
    run('ip', ['link', 'set', host, 'master', this.bridge, 'up'])
    run('ip', ['link', 'set', peer, 'netns', ns])
    const inNs = (...args: string[]) => run('ip', ['netns', 'exec', ns, ...args])
    inNs('ip', 'link', 'set', peer, 'name', 'eth0')
    inNs('ip', 'addr', 'add', `${ip}/24`, 'dev', 'eth0')
    inNs('ip', 'link', 'set', 'eth0', 'up')
    inNs('ip', 'link', 'set', 'lo', 'up')
    inNs('ip', 'route', 'add', 'default', 'via', this.gateway)
    run('ip', ['netns', 'exec', ns, 'iptables-restore'], captureRules(capture))
    return { ns, ip }
  }

  /** The namespace's /etc/hosts: itself, and every service name (short ones for its own namespace) at its VIP. */
  writeHosts(w: WorkloadNet, hostname: string, entries: { vip: string; names: string[] }[]): void {
    const dir = join('/etc/netns', w.ns)
    mkdirSync(dir, { recursive: true })
    const lines = [
      '127.0.0.1\tlocalhost',
      `${w.ip}\t${hostname}`,
      ...entries.map((e) => `${e.vip}\t${e.names.join(' ')}`),
    ]
    writeFileSync(join(dir, 'hosts'), `${lines.join('\n')}\n`)
  }

  /** A directory only the sidecar's user reads (its bootstrap token and trust bundle: the data dir may be 0700). */
  proxyDir(name: string): string {
    const parent = join('/run/loom', this.tag)
    mkdirSync(parent, { recursive: true, mode: 0o755 })
    chmodSync('/run/loom', 0o755)
    chmodSync(parent, 0o755)
    const dir = join(parent, name)
    mkdirSync(dir, { recursive: true, mode: 0o700 })
    execFileSync('chown', [`${PROXY_UID}:${PROXY_GID}`, dir])
    return dir
  }

  remove(): string[] {
    return removeNetwork(this.dataDir)
  }
}

/**
 * `ip` arguments that run `argv` in namespace `ns`: as the sidecar's user (`proxy`); as an application, with the
 * user of `loom up` but no capabilities at all (`app`: root without CAP_NET_ADMIN cannot change its namespace's
 * capture rules, without CAP_SETUID cannot become the sidecar's user, without CAP_SYS_ADMIN cannot enter another
 * namespace); or as `loom up` itself (`loom`: readiness probes).
 */
export function inNamespace(ns: string, argv: string[], as: 'proxy' | 'app' | 'loom'): string[] {
  const prefix =
    as === 'proxy'
      ? ['setpriv', `--reuid=${PROXY_UID}`, `--regid=${PROXY_GID}`, '--clear-groups', '--']
      : as === 'app'
        ? ['setpriv', '--bounding-set=-all', '--inh-caps=-all', '--']
        : []
  return ['netns', 'exec', ns, ...prefix, ...argv]
}
