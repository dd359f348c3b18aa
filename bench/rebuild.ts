// The control plane's rebuild, without sockets: what `ControlPlane.rebuild` does after a change (translate the
// connected proxies, store the snapshots in the xDS snapshot cache), timed for two changes:
//   vs:  1000 services (a ServiceEntry and a VirtualService each), 1000 proxies of one group, one VirtualService
//        changed;
//   add: 100 services, 1000 proxies, then 1000 services more in one change;
//   scoped: 100 services, 1000 on-demand proxies each scoped to the 10 services it calls (those that exist), then
//        900 services more in one change (bench:control's on-demand step, without the sockets).
// `node dist/bench/rebuild.js [--proxies N] [--translator <path to another build's translate.js>]`: with
// --translator, that build's BatchTranslator is timed the way the control plane used it before incremental
// translation (a new translator per change, every proxy translated and stored).
import { parseManifests, type Resource } from '../src/api/index.js'
import { Registry } from '../src/control/registry/registry.js'
import type { TranslateInput, TranslateNode } from '../src/control/translate/translate.js'
import { SnapshotCache } from '../src/xds/cache.js'
import type { Snapshot } from '../src/xds/snapshot.js'
import { calledServices } from './control/clients.js'
import { serviceHost, services, virtualService } from './control/manifests.js'

interface Translator {
  translate(node: TranslateNode): Snapshot
  update?(node: TranslateNode): Snapshot | null
}
type TranslatorClass = new (input: TranslateInput, previous?: Translator) => Translator

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`)
  return i < 0 ? undefined : process.argv[i + 1]
}

function resources(text: string): Resource[] {
  const r = parseManifests(text, 'bench.yaml')
  if (r.errors.length > 0) throw new Error(JSON.stringify(r.errors.slice(0, 3)))
  return r.resources as Resource[]
}

function inputOf(list: Resource[]): TranslateInput {
  return { resources: list, services: Registry.fromResources(list).services() }
}

function proxies(n: number): TranslateNode[] {
  return Array.from({ length: n }, (_, i) => {
    const ip = `10.0.${i >> 8}.${i & 255}`
    return {
      id: `sidecar~${ip}~client-${i}.default~default.svc.cluster.local`,
      kind: 'sidecar' as const,
      namespace: 'default',
      labels: { app: 'client', version: 'v1' },
      serviceAccount: 'client',
      ip,
      generator: 'envoy' as const,
    }
  })
}

/** One rebuild: ms, proxies stored, and the cache's encodes. */
function rebuild(
  cache: SnapshotCache,
  nodes: TranslateNode[],
  make: () => Translator,
  incremental: boolean,
): { ms: number; translateMs: number; stored: number; encodes: number } {
  const encodes = cache.stats().encodes
  const t0 = performance.now()
  const t = make()
  let stored = 0
  let storing = 0
  for (const n of nodes) {
    const s = incremental && t.update !== undefined ? t.update(n) : t.translate(n)
    if (s === null) continue
    const t1 = performance.now()
    cache.setSnapshot(n.id, s)
    storing += performance.now() - t1
    stored++
  }
  const ms = performance.now() - t0
  return {
    ms: Math.round(ms),
    translateMs: Math.round(ms - storing),
    stored,
    encodes: cache.stats().encodes - encodes,
  }
}

/** Proxy i scoped to the services it calls (as the control plane scopes an on-demand proxy: those that exist). */
function scoped(nodes: TranslateNode[], input: TranslateInput): TranslateNode[] {
  const known = new Set(input.services.map((s) => s.hostname))
  return nodes.map((n, i) => ({
    ...n,
    metadata: { ...n.metadata, LOOM_ON_DEMAND: 'true' },
    scopeHosts: new Set(
      calledServices(i, 1000)
        .map(serviceHost)
        .filter((h) => known.has(h)),
    ),
  }))
}

async function scenario(
  name: string,
  Batch: TranslatorClass,
  incremental: boolean,
  first: TranslateInput,
  second: TranslateInput,
  nodes: TranslateNode[],
  scope?: (nodes: TranslateNode[], input: TranslateInput) => TranslateNode[],
) {
  const cache = new SnapshotCache()
  let prev: Translator | undefined
  const make = (input: TranslateInput) => () => {
    prev = incremental ? new Batch(input, prev) : new Batch(input)
    return prev
  }
  const initial = rebuild(cache, scope ? scope(nodes, first) : nodes, make(first), incremental)
  const change = rebuild(cache, scope ? scope(nodes, second) : nodes, make(second), incremental)
  console.log(
    `${name.padEnd(6)} ${incremental ? 'incremental' : 'full       '}  initial ${String(initial.ms).padStart(6)} ms` +
      `  change ${String(change.ms).padStart(6)} ms, translating ${String(change.translateMs).padStart(6)} ms` +
      ` (${change.stored} proxies stored, ${change.encodes} encodes)`,
  )
}

const n = Number(arg('proxies') ?? 1000)
const other = arg('translator')
const mod = (await import(other ?? '../src/control/translate/translate.js')) as { BatchTranslator: TranslatorClass }
const nodes = proxies(n)
const base = resources(services(0, 1000))
const changed = base.map((r) =>
  r.kind === 'VirtualService' && r.metadata.name === 'svc-00500' ? resources(virtualService(500, 7))[0]! : r,
)
const incremental = other === undefined
await scenario('vs', mod.BatchTranslator, incremental, inputOf(base), inputOf(changed), nodes)
const firstServices = (n: number) => inputOf(resources(services(0, n)))
await scenario('add', mod.BatchTranslator, incremental, firstServices(100), firstServices(1100), nodes)
await scenario('scoped', mod.BatchTranslator, incremental, firstServices(100), firstServices(1000), nodes, scoped)
