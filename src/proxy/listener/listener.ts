/**
 * Listeners: a socket bound to an address, its filter chains, and the hand-off of each accepted connection to a
 * network filter (HTTP connection manager or TCP proxy).
 *
 * A listener whose chains use TLS or match on `server_names`, `transport_protocol` or `application_protocols`
 * inspects each connection's first bytes (tls-inspector.ts) and picks the chain by Envoy's filter chain match, so
 * one port serves TLS and plain-text chains; a TLS chain then makes the handshake with its current context (rebuilt
 * when an SDS secret changes) and checks the client's certificate. Plain connections with an HTTP connection
 * manager in AUTO mode look at the first bytes: the HTTP/2 connection preface goes to the HTTP/2 codec, anything
 * else to the HTTP/1.1 codec. TLS connections pick the codec by ALPN.
 */
import * as net from 'node:net'
import type * as TLS from 'node:tls'
import type { Http2Server, Http2Session } from 'node:http2'
import type { FilterChain, Listener } from '../../config/envoy.js'
import { H1ServerConnection } from '../http/h1/server.js'
import { adoptForSharedRead, shareTlsReads } from '../http/h1/shared-read.js'
import { createH2Server, drainSession } from '../http/h2/server.js'
import type { HcmContext } from '../http/hcm.js'
import { ListenerStats } from '../stats/stats.js'
import type { TcpProxyContext } from '../tcp/tcp-proxy.js'
import type { NetworkRbacFilter } from '../rbac/network.js'
import { tls } from '../../core/lazy.js'
import { log } from '../../core/log.js'
import type { DownstreamTls } from '../tls.js'
import { inspectClientHello } from './tls-inspector.js'
import { loadOriginalDst, originalDst } from './original-dst.js'

/**
 * Finds the listener a connection accepted by a `use_original_dst` listener belongs to: one with `bind_to_port:
 * false` and the same traffic direction at the original destination's address and port, else at 0.0.0.0 and that
 * port (Envoy's order). Null: the accepting listener keeps it.
 */
export type OriginalDstLookup = (address: string, port: number, direction: string) => ActiveListener | null

/** Subscribes the TLS contexts of `chains` to their secrets; returns the function that unsubscribes them all. */
function watchChains(chains: readonly CompiledChain[]): () => void {
  const offs = chains.flatMap((c) => (c.tls === null ? [] : [c.tls.watch()]))
  return () => {
    for (const off of offs) off()
  }
}

export type NetworkHandler = { kind: 'hcm'; hcm: HcmContext } | { kind: 'tcp'; tcp: TcpProxyContext }

export interface CompiledChain {
  readonly config: FilterChain
  readonly serverNames: readonly string[]
  /** filter_chain_match.transport_protocol; '' when unset */
  readonly transportProtocol: '' | 'tls' | 'raw_buffer'
  /** filter_chain_match.application_protocols (empty: any) */
  readonly applicationProtocols: readonly string[]
  /** the chain's TLS context; null on a plain-text chain */
  readonly tls: DownstreamTls | null
  /** the chain's network RBAC filters, in order, before its handler (most chains have none) */
  readonly rbac: readonly NetworkRbacFilter[]
  readonly handler: NetworkHandler
}

/** What the filter chain match reads of a chain (a CompiledChain, or a chain's config for `loom explain`). */
export type ChainMatch = Pick<CompiledChain, 'serverNames' | 'transportProtocol' | 'applicationProtocols'>

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n')

/** Envoy's listener_filters_timeout default: a client that sends no first bytes in this time is closed. */
const INSPECT_TIMEOUT_MS = 15_000

/** Whether connections must be inspected (TLS or not, SNI, ALPN) before a chain is chosen. */
function needsInspection(chains: readonly CompiledChain[]): boolean {
  return chains.some(
    (c) =>
      c.tls !== null || c.transportProtocol !== '' || c.applicationProtocols.length > 0 || c.serverNames.length > 0,
  )
}

/**
 * Envoy's filter chain match, criteria in its order, each narrowing the candidates: server_names (exact, then the
 * longest `*.suffix`, else the chains without server names), transport_protocol (equal, else unset),
 * application_protocols (one offered by the client, else unset). Null: no chain matches (the connection is closed).
 */
export function matchChain<C extends ChainMatch>(
  chains: readonly C[],
  serverName: string,
  transport: 'tls' | 'raw_buffer',
  alpn: readonly string[],
): C | null {
  const name = serverName.toLowerCase()
  const exact: C[] = []
  let wild: C[] = []
  let wildLen = -1
  const none: C[] = []
  for (const c of chains) {
    if (c.serverNames.length === 0) {
      none.push(c)
      continue
    }
    for (const sn of c.serverNames) {
      if (name !== '' && sn === name) {
        exact.push(c)
        break
      }
      if (name !== '' && sn.startsWith('*.') && name.endsWith(sn.slice(1))) {
        if (sn.length > wildLen) {
          wild = [c]
          wildLen = sn.length
        } else if (sn.length === wildLen) wild.push(c)
      }
    }
  }
  let cands = exact.length > 0 ? exact : wild.length > 0 ? wild : none
  const tp = cands.filter((c) => c.transportProtocol === transport)
  cands = tp.length > 0 ? tp : cands.filter((c) => c.transportProtocol === '')
  const ap = cands.filter((c) => c.applicationProtocols.some((p) => alpn.includes(p)))
  cands = ap.length > 0 ? ap : cands.filter((c) => c.applicationProtocols.length === 0)
  return cands[0] ?? null
}

export class ActiveListener {
  readonly name: string
  config: Listener
  stats: ListenerStats
  /** the filter chains new connections get; swapped in place by a listener update */
  chains: CompiledChain[]
  private readonly server: net.Server
  private readonly h2Servers = new Map<HcmContext, Http2Server>()
  private readonly h1 = new Set<H1ServerConnection>()
  private readonly h2 = new Set<Http2Session>()
  private readonly sockets = new Set<net.Socket>()
  private draining = false
  /** whether connections are inspected before a chain is chosen (TLS chains, or matches on TLS fields) */
  private readonly inspect: boolean
  /** stops the secret subscriptions of the current chains */
  private unwatch: () => void = () => {}
  boundPort = 0
  /** set by the proxy for a `use_original_dst` listener: where its connections are handed */
  handoff: OriginalDstLookup | null = null

  constructor(config: Listener, chains: CompiledChain[]) {
    this.name = config.name
    this.config = config
    this.chains = chains
    this.stats = new ListenerStats(
      `${config.address.socket_address.address}_${config.address.socket_address.port_value}`,
    )
    this.inspect = needsInspection(chains)
    this.unwatch = watchChains(chains)
    this.server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
      if (this.handoff !== null) {
        // Envoy's use_original_dst: the listener bound to where the connection was going (before iptables
        // redirected it here) takes it; else this listener's own chains do (a passthrough)
        const dst = originalDst(socket)
        const target = dst === null ? null : this.handoff(dst.address, dst.port, this.config.traffic_direction ?? '')
        if (target !== null && target !== this) return target.accept(socket)
      }
      this.accept(socket)
    })
    this.server.on('error', () => {})
  }

  /** Takes a connection: this listener's accept, or one handed over by a `use_original_dst` listener. */
  accept(socket: net.Socket): void {
    this.track(socket)
    if (this.inspect) this.inspectConnection(socket)
    else this.dispatch(socket, this.chains[0]!, 'http', null)
  }

  /** false: `bind_to_port: false`, a listener that only takes connections a `use_original_dst` listener hands it */
  get binds(): boolean {
    return this.config.bind_to_port !== false
  }

  /**
   * Reads the first bytes (Envoy's tls_inspector), chooses the chain, and hands the connection to it: a TLS chain
   * makes the handshake with its current context and checks the client's certificate first. Until then a client
   * that closes or stays silent is closed here.
   */
  private inspectConnection(socket: net.Socket): void {
    let buf: Buffer | null = null
    const onEnd = () => socket.destroy()
    socket.once('end', onEnd)
    socket.setTimeout(INSPECT_TIMEOUT_MS, onEnd)
    const onData = (chunk: Buffer) => {
      buf = buf === null ? chunk : Buffer.concat([buf, chunk])
      const seen = inspectClientHello(buf)
      if (seen.kind === 'more') return
      socket.off('data', onData)
      socket.off('end', onEnd)
      socket.setTimeout(0)
      socket.pause()
      const chain =
        seen.kind === 'tls'
          ? matchChain(this.chains, seen.serverName, 'tls', seen.alpn)
          : matchChain(this.chains, '', 'raw_buffer', [])
      if (chain === null) {
        this.stats.no_filter_chain_match++
        socket.destroy()
        return
      }
      if (chain.tls === null) {
        this.dispatch(socket, chain, 'http', buf)
        return
      }
      this.handshake(socket, chain, chain.tls, buf)
    }
    socket.on('data', onData)
  }

  private handshake(socket: net.Socket, chain: CompiledChain, t: DownstreamTls, first: Buffer): void {
    if (t.serverOptions === null || t.missing.length > 0) {
      // the chain's secrets have not arrived (Envoy keeps such a listener warming): refuse the handshake
      this.stats.downstream_cx_tls_secret_missing++
      socket.destroy()
      return
    }
    let server = t.server
    if (server === null) {
      server = tls().createServer(t.serverOptions, (s) => this.secured(s, chain, t))
      server.on('tlsClientError', (_err, s) => s.destroy())
      t.server = server
    }
    // not half-open during the handshake (the TLS socket inherits this): a client that gives up (e.g. rejects our
    // certificate) sends a FIN that would otherwise leave the socket open forever; `secured` turns it back on
    socket.allowHalfOpen = false
    socket.unshift(first)
    server.emit('connection', socket)
  }

  /** A finished handshake: the client's certificate is checked, then the connection goes to the chain. */
  private secured(socket: TLS.TLSSocket, chain: CompiledChain, t: DownstreamTls): void {
    const peer = socket.getPeerCertificate(true)
    const presented = peer !== null && peer.raw !== undefined
    if (presented || t.requireClientCert) {
      const verdict =
        !socket.authorized && presented
          ? { ok: false as const, reason: 'tls_peer: untrusted_root', message: String(socket.authorizationError) }
          : (t.check?.(socket) ?? { ok: true as const })
      if (!verdict.ok) {
        this.stats.downstream_cx_tls_peer_rejected++
        log('debug', 'listener', 'client certificate refused', { reason: verdict.reason, detail: verdict.message })
        socket.destroy()
        return
      }
    }
    socket.allowHalfOpen = true
    this.dispatch(socket, chain, 'https', null)
  }

  private track(socket: net.Socket): void {
    this.stats.downstream_cx_total++
    this.stats.downstream_cx_active++
    this.watch(socket)
  }

  /** Counts the socket's close on the stats it was counted in when it opened. */
  private watch(socket: net.Socket): void {
    const stats = this.stats
    this.sockets.add(socket)
    socket.once('close', () => {
      stats.downstream_cx_active--
      stats.downstream_cx_destroy++
      this.sockets.delete(socket)
    })
  }

  /** Hands a connection to its chain's network filter; `first`: bytes already read from it. */
  private dispatch(socket: net.Socket, chain: CompiledChain, scheme: 'http' | 'https', first: Buffer | null): void {
    const h = chain.handler
    if (chain.rbac.length > 0 && !this.admitted(socket, chain)) return
    if (h.kind === 'tcp') {
      if (first !== null) socket.unshift(first)
      h.tcp.handle(socket)
      return
    }
    const hcm = h.hcm
    if (hcm.codec === 'HTTP2' || (socket as TLS.TLSSocket).alpnProtocol === 'h2') {
      if (first !== null) socket.unshift(first)
      this.toH2(socket, hcm, scheme)
      return
    }
    if (hcm.codec === 'HTTP1' || scheme === 'https') {
      this.toH1(socket, hcm, scheme, first)
      return
    }
    if (first !== null) return this.sniffed(socket, hcm, scheme, first)
    // AUTO on plain text: sniff the HTTP/2 preface. Until the first byte no codec owns the socket: a client that
    // closes (half-open listener: only 'end' is seen) or stays silent for the idle timeout is closed here.
    const onEnd = () => socket.destroy()
    socket.once('end', onEnd)
    if (hcm.idleTimeoutMs > 0) socket.setTimeout(hcm.idleTimeoutMs, onEnd)
    socket.once('data', (bytes: Buffer) => {
      socket.off('end', onEnd)
      socket.setTimeout(0)
      this.sniffed(socket, hcm, scheme, bytes)
    })
  }

  /** The chain's network RBAC filters decide the connection; a refused one is closed here (and logged). */
  private admitted(socket: net.Socket, chain: CompiledChain): boolean {
    for (const f of chain.rbac) {
      const refused = f.check(socket, this.name)
      if (refused === null) continue
      if (chain.handler.kind === 'tcp') chain.handler.tcp.refused(socket, refused)
      socket.destroy()
      return false
    }
    return true
  }

  private sniffed(socket: net.Socket, hcm: HcmContext, scheme: 'http' | 'https', first: Buffer): void {
    const n = Math.min(first.length, PREFACE.length)
    if (n > 0 && first.compare(PREFACE, 0, n, 0, n) === 0) {
      socket.pause()
      socket.unshift(first)
      this.toH2(socket, hcm, scheme)
    } else this.toH1(socket, hcm, scheme, first)
  }

  private toH1(accepted: net.Socket, hcm: HcmContext, scheme: 'http' | 'https', first: Buffer | null): void {
    let socket = accepted
    let conn: H1ServerConnection | null = null
    // reads go to the buffer shared by the HTTP/1 codecs (see shared-read.ts)
    let shared = false
    if (scheme === 'http') {
      const adopted = adoptForSharedRead(accepted, (n) => conn!.onRead(n))
      if (adopted !== null) {
        this.sockets.delete(accepted)
        this.watch(adopted)
        socket = adopted
        shared = true
      }
    } else shared = shareTlsReads(accepted, (n) => conn!.onRead(n))
    conn = new H1ServerConnection(socket, hcm, scheme, shared)
    this.h1.add(conn)
    socket.once('close', () => this.h1.delete(conn))
    if (this.draining) conn.drain()
    if (first !== null) conn.feed(first)
  }

  private toH2(socket: net.Socket, hcm: HcmContext, scheme: 'http' | 'https'): void {
    let server = this.h2Servers.get(hcm)
    if (server === undefined) {
      server = createH2Server(hcm, scheme)
      server.on('session', (s: Http2Session) => {
        this.h2.add(s)
        s.once('close', () => this.h2.delete(s))
        if (this.draining) drainSession(s)
      })
      this.h2Servers.set(hcm, server)
    }
    server.emit('connection', socket)
  }

  listen(): Promise<void> {
    const a = this.config.address.socket_address
    if (!this.binds) {
      this.boundPort = a.port_value
      return Promise.resolve()
    }
    // a listener that needs the original destination fails here, with how to build the addon, not per connection
    if (this.config.use_original_dst === true) loadOriginalDst()
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => reject(err)
      this.server.once('error', onError)
      this.server.listen({ host: a.address, port: a.port_value, backlog: 1024 }, () => {
        this.server.off('error', onError)
        const addr = this.server.address()
        this.boundPort = typeof addr === 'object' && addr !== null ? addr.port : a.port_value
        resolve()
      })
    })
  }

  get address(): string {
    return `${this.config.address.socket_address.address}:${this.boundPort}`
  }

  /**
   * An update can reuse this listener's socket if the TLS setup the server socket was built with is unchanged
   * (plain text stays plain; TLS keeps the same transport sockets).
   */
  canSwapTo(chains: readonly CompiledChain[]): boolean {
    // connections are inspected or not from the listener's start; a change of that needs a new listener
    return needsInspection(chains) === this.inspect
  }

  /**
   * New connections get `chains`; connections on the old chains finish their current requests and close (HTTP/1.1
   * after the response in progress, HTTP/2 with GOAWAY). Returns the old chains.
   */
  swapChains(config: Listener, chains: CompiledChain[]): CompiledChain[] {
    const old = this.chains
    this.config = config
    this.chains = chains
    this.unwatch()
    this.unwatch = watchChains(chains)
    for (const c of this.h1) c.drain()
    for (const s of this.h2) drainSession(s)
    this.h2Servers.clear()
    return old
  }

  /** Closes what the chains own (access log files). */
  close(): void {
    this.unwatch()
    for (const c of this.chains) if (c.handler.kind === 'hcm') c.handler.hcm.close()
  }

  /** Stop accepting; ask every connection to finish its current work and close. */
  drain(): void {
    if (this.draining) return
    this.draining = true
    this.unwatch()
    this.server.close()
    for (const c of this.h1) c.drain()
    for (const s of this.h2) drainSession(s)
  }

  get activeConnections(): number {
    return this.sockets.size
  }

  /** Force-close whatever is left. */
  destroy(): void {
    this.drain()
    for (const s of this.sockets) s.destroy()
    for (const s of this.h2) s.destroy()
  }
}
