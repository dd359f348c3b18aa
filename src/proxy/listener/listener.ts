/**
 * Listeners: a socket bound to an address, its filter chains, and the hand-off of each accepted connection to a
 * network filter (HTTP connection manager or TCP proxy).
 *
 * Plain listeners with an HTTP connection manager in AUTO mode look at the first bytes: the HTTP/2 connection
 * preface goes to the HTTP/2 codec, anything else to the HTTP/1.1 codec. TLS listeners pick a filter chain by SNI
 * and the codec by ALPN.
 */
import * as net from 'node:net'
import type * as TLS from 'node:tls'
import type { Http2Server, Http2Session } from 'node:http2'
import type { FilterChain, Listener } from '../../config/envoy.js'
import { H1ServerConnection } from '../http/h1/server.js'
import { adoptForSharedRead } from '../http/h1/shared-read.js'
import { createH2Server, drainSession } from '../http/h2/server.js'
import type { HcmContext } from '../http/hcm.js'
import { ListenerStats } from '../stats/stats.js'
import type { TcpProxyContext } from '../tcp/tcp-proxy.js'
import { tls } from '../../core/lazy.js'
import { downstreamContextOptions } from '../tls.js'

export type NetworkHandler = { kind: 'hcm'; hcm: HcmContext } | { kind: 'tcp'; tcp: TcpProxyContext }

export interface CompiledChain {
  readonly config: FilterChain
  readonly serverNames: readonly string[]
  readonly secureContext: TLS.SecureContext | null
  readonly alpn: string[]
  readonly requireClientCert: boolean
  readonly handler: NetworkHandler
}

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n')

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
  boundPort = 0

  constructor(config: Listener, chains: CompiledChain[]) {
    this.name = config.name
    this.config = config
    this.chains = chains
    this.stats = new ListenerStats(
      `${config.address.socket_address.address}_${config.address.socket_address.port_value}`,
    )
    const tlsChains = chains.filter((c) => c.secureContext !== null)
    if (tlsChains.length > 0) {
      // the chain a client without SNI gets: the one without server_names, as chainFor('') picks it
      const noSni = this.chainFor('')
      const dflt = noSni.secureContext !== null ? noSni : tlsChains[0]!
      this.server = tls().createServer(
        {
          // tls.Server ignores a `secureContext` option: its default (no SNI) certificate must be given as PEM
          ...downstreamContextOptions(dflt.config.transport_socket!.typed_config),
          SNICallback: (name, cb) => cb(null, this.chainFor(name).secureContext ?? dflt.secureContext!),
          ALPNProtocols: dflt.alpn,
          requestCert: dflt.requireClientCert,
          rejectUnauthorized: dflt.requireClientCert,
          // not half-open during the handshake: a client that gives up (e.g. rejects our certificate) sends a FIN
          // that would otherwise leave the socket open forever; half-close is turned on once the handshake is done
        },
        (socket) => {
          socket.allowHalfOpen = true
          this.dispatch(socket, this.chainFor(socket.servername || ''), 'https')
        },
      )
      this.server.on('connection', (s: net.Socket) => this.track(s))
      this.server.on('tlsClientError', (_err, s) => s.destroy())
    } else {
      this.server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
        this.track(socket)
        this.dispatch(socket, this.chains[0]!, 'http')
      })
    }
    this.server.on('error', () => {})
  }

  /** Filter chain by SNI: exact name, then the longest `*.suffix`, then a chain without server_names. */
  private chainFor(serverName: string): CompiledChain {
    const name = serverName.toLowerCase()
    let best: CompiledChain | null = null
    let bestLen = -1
    let fallback: CompiledChain | null = null
    for (const c of this.chains) {
      if (c.serverNames.length === 0) {
        fallback ??= c
        continue
      }
      for (const sn of c.serverNames) {
        if (sn === name) return c
        if (sn.startsWith('*.') && name.endsWith(sn.slice(1)) && sn.length > bestLen) {
          best = c
          bestLen = sn.length
        }
      }
    }
    return best ?? fallback ?? this.chains[0]!
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

  private dispatch(socket: net.Socket, chain: CompiledChain, scheme: 'http' | 'https'): void {
    const h = chain.handler
    if (h.kind === 'tcp') {
      h.tcp.handle(socket)
      return
    }
    const hcm = h.hcm
    if (hcm.codec === 'HTTP2' || (socket as TLS.TLSSocket).alpnProtocol === 'h2') {
      this.toH2(socket, hcm, scheme)
      return
    }
    if (hcm.codec === 'HTTP1' || scheme === 'https') {
      this.toH1(socket, hcm, scheme, null)
      return
    }
    // AUTO on plain text: sniff the HTTP/2 preface. Until the first byte no codec owns the socket: a client that
    // closes (half-open listener: only 'end' is seen) or stays silent for the idle timeout is closed here.
    const onEnd = () => socket.destroy()
    socket.once('end', onEnd)
    if (hcm.idleTimeoutMs > 0) socket.setTimeout(hcm.idleTimeoutMs, onEnd)
    socket.once('data', (first: Buffer) => {
      socket.off('end', onEnd)
      socket.setTimeout(0)
      const n = Math.min(first.length, PREFACE.length)
      if (n > 0 && first.compare(PREFACE, 0, n, 0, n) === 0) {
        socket.pause()
        socket.unshift(first)
        this.toH2(socket, hcm, scheme)
      } else this.toH1(socket, hcm, scheme, first)
    })
  }

  private toH1(accepted: net.Socket, hcm: HcmContext, scheme: 'http' | 'https', first: Buffer | null): void {
    let socket = accepted
    let conn: H1ServerConnection | null = null
    if (scheme === 'http') {
      // plain TCP: reads go to the buffer shared by the HTTP/1 codecs (see shared-read.ts)
      const adopted = adoptForSharedRead(accepted, (n) => conn!.onRead(n))
      if (adopted !== null) {
        this.sockets.delete(accepted)
        this.watch(adopted)
        socket = adopted
      }
    }
    conn = new H1ServerConnection(socket, hcm, scheme, socket !== accepted)
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
    const tlsOf = (cs: readonly CompiledChain[]) => JSON.stringify(cs.map((c) => c.config.transport_socket ?? null))
    const wasTls = this.chains.some((c) => c.secureContext !== null)
    const isTls = chains.some((c) => c.secureContext !== null)
    return wasTls === isTls && (!isTls || tlsOf(this.chains) === tlsOf(chains))
  }

  /**
   * New connections get `chains`; connections on the old chains finish their current requests and close (HTTP/1.1
   * after the response in progress, HTTP/2 with GOAWAY). Returns the old chains.
   */
  swapChains(config: Listener, chains: CompiledChain[]): CompiledChain[] {
    const old = this.chains
    this.config = config
    this.chains = chains
    for (const c of this.h1) c.drain()
    for (const s of this.h2) drainSession(s)
    this.h2Servers.clear()
    return old
  }

  /** Closes what the chains own (access log files). */
  close(): void {
    for (const c of this.chains) if (c.handler.kind === 'hcm') c.handler.hcm.close()
  }

  /** Stop accepting; ask every connection to finish its current work and close. */
  drain(): void {
    if (this.draining) return
    this.draining = true
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
