/**
 * Access logs: to stdout, stderr or a file (Envoy's stream and file access loggers; a file path of `/dev/stdout` or
 * `/dev/stderr` is the process's own stream, as Envoy treats it). Without a `log_format` each entry is one JSON
 * object per line, the entry hcm.ts / tcp-proxy.ts build (field names follow Envoy's command operators,
 * lower-cased, so existing log pipelines map them easily); with one, the line access-log-format.ts compiles.
 */
import { createWriteStream, type WriteStream } from 'node:fs'
import type { AccessLog } from '../config/envoy.js'
import { TypeUrls } from '../config/type-urls.js'
import { type AccessLogFormatter, compileLogFormat, type FormatInput } from './access-log-format.js'

export type { FormatInput }

const NO_HEADERS = (): undefined => undefined

export interface AccessLogSink {
  /**
   * Writes one entry. `input` gives a format the request headers and dynamic metadata; without it (TCP, protocol
   * errors) operators that read them see none.
   */
  write(entry: Record<string, unknown>, input?: FormatInput): void
  close(): void
}

class StreamSink implements AccessLogSink {
  private readonly out: NodeJS.WritableStream
  private readonly owned: WriteStream | null
  private readonly format: AccessLogFormatter | null
  constructor(out: NodeJS.WritableStream, owned: WriteStream | null, format: AccessLogFormatter | null) {
    this.out = out
    this.owned = owned
    this.format = format
  }
  write(entry: Record<string, unknown>, input?: FormatInput): void {
    const f = this.format
    if (f === null) this.out.write(`${JSON.stringify(entry)}\n`)
    else this.out.write(f(input ?? { entry, header: NO_HEADERS, metadata: NO_HEADERS }))
  }
  close(): void {
    this.owned?.end()
  }
}

export function createAccessLogs(configs: readonly AccessLog[] | undefined): AccessLogSink[] {
  const out: AccessLogSink[] = []
  for (const c of configs ?? []) {
    const t = c.typed_config
    // validated with the config: a format that reaches here compiles
    const format = compileLogFormat(t.log_format).formatter
    if (t['@type'] === TypeUrls.stdoutLog) out.push(new StreamSink(process.stdout, null, format))
    else if (t['@type'] === TypeUrls.stderrLog) out.push(new StreamSink(process.stderr, null, format))
    else if (t.path === '/dev/stdout') out.push(new StreamSink(process.stdout, null, format))
    else if (t.path === '/dev/stderr') out.push(new StreamSink(process.stderr, null, format))
    else {
      const ws = createWriteStream(t.path, { flags: 'a' })
      ws.on('error', () => {})
      out.push(new StreamSink(ws, ws, format))
    }
  }
  return out
}
