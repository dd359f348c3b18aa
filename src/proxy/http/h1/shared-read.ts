/**
 * Socket reads into one shared buffer.
 *
 * A net.Socket read the usual way gets a fresh 64 KB allocation from Node for every read, shrunk to size, wrapped
 * in a Buffer and pushed through the Readable stream machinery before a 'data' listener sees it. With Node's
 * `onread` option the bytes land in a buffer the caller gives and one callback is made: on a proxied request that is
 * a third of the user-space instructions Node spends on the socket. The HTTP/1 codecs read this way on plain TCP:
 * every such socket reads into READ_BUFFER, and each callback copies its bytes out (from Node's buffer pool when
 * small) before anything else runs, because the next read, on any socket, overwrites them.
 *
 * Upstream connections pass `onread` to net.connect (plain) or tls.connect (TLS: the decrypted bytes of each record
 * land there). Accepted connections come from net.Server, which has no such option, so `adoptForSharedRead` moves
 * the accepted connection's handle onto a new net.Socket made with `onread` (the same way Node hands a handle to a
 * socket it creates). It returns null, and the caller keeps the socket as it is, when the socket does not look as
 * expected. An accepted TLS connection is a TLSSocket that tls.Server made around the TCP socket, which takes no
 * `onread` either; once its handshake is done, `shareTlsReads` gives it the shared buffer the way net.Socket does for
 * the option (the buffer and callback under Node's own symbols, then the handle's `useUserBuffer`), or leaves it
 * reading as before (false) when the socket does not look as expected.
 */
import { Buffer } from 'node:buffer'
import * as net from 'node:net'

export const READ_BUFFER = Buffer.allocUnsafe(64 * 1024)

/** Copies the `n` bytes of the latest read out of READ_BUFFER. */
export function takeRead(n: number): Buffer {
  const b = Buffer.allocUnsafe(n)
  READ_BUFFER.copy(b, 0, 0, n)
  return b
}

interface HandleOwner {
  _handle?: { readStart?: unknown; useUserBuffer?: (b: Buffer) => void } | null
}

/** The own properties under which every net.Socket keeps its `onread` buffer and callback (null: not found). */
let onreadKeys: { buffer: symbol; callback: symbol } | null | undefined

function findOnreadKeys(): { buffer: symbol; callback: symbol } | null {
  const probe = new net.Socket()
  const own = Object.getOwnPropertySymbols(probe)
  probe.destroy()
  const buffer = own.find((k) => k.description === 'kBuffer')
  const callback = own.find((k) => k.description === 'kBufferCb')
  return buffer === undefined || callback === undefined ? null : { buffer, callback }
}

/**
 * Moves an accepted plain TCP connection to a new socket whose reads go to `onRead(n)` (the bytes are in
 * READ_BUFFER). The old socket object is emptied and destroyed without closing the connection. Bytes the old socket
 * already buffered would be lost, so a socket with any is not moved.
 */
export function adoptForSharedRead(socket: net.Socket, onRead: (n: number) => boolean): net.Socket | null {
  const owner = socket as unknown as HandleOwner
  const handle = owner._handle
  if (
    handle === null ||
    handle === undefined ||
    typeof handle.readStart !== 'function' ||
    socket.destroyed ||
    socket.readableLength > 0 ||
    socket.readableEnded
  ) {
    return null
  }
  owner._handle = null
  socket.removeAllListeners()
  socket.on('error', () => {})
  socket.destroy()
  const opts = {
    handle,
    allowHalfOpen: socket.allowHalfOpen,
    readable: true,
    writable: true,
    onread: { buffer: READ_BUFFER, callback: onRead },
  }
  return new net.Socket(opts as net.SocketConstructorOpts)
}

/**
 * Switches a TLS socket whose handshake is done to reads into READ_BUFFER: from now on `onRead(n)` is called with the
 * decrypted bytes, not 'data'. False, and the socket reads as before, when it already holds bytes, has ended, has a
 * read buffer of its own, or Node does not look as expected.
 */
export function shareTlsReads(socket: net.Socket, onRead: (n: number) => boolean): boolean {
  if (onreadKeys === undefined) onreadKeys = findOnreadKeys()
  const keys = onreadKeys
  const handle = (socket as unknown as HandleOwner)._handle
  if (
    keys === null ||
    handle === null ||
    handle === undefined ||
    typeof handle.useUserBuffer !== 'function' ||
    socket.destroyed ||
    socket.readableLength > 0 ||
    socket.readableEnded
  ) {
    return false
  }
  const slots = socket as unknown as Record<symbol, unknown>
  if (slots[keys.buffer] !== null || slots[keys.callback] !== null) return false
  slots[keys.buffer] = READ_BUFFER
  slots[keys.callback] = onRead
  handle.useUserBuffer(READ_BUFFER)
  return true
}
