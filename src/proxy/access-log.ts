/**
 * Access logs: one JSON object per line, to stdout, stderr or a file (Envoy's stream and file access loggers).
 * Field names follow Envoy's command operators, lower-cased, so existing log pipelines map them easily.
 */
import { createWriteStream, type WriteStream } from 'node:fs'
import type { AccessLog } from '../config/envoy.js'
import { TypeUrls } from '../config/type-urls.js'

export interface AccessLogSink {
  write(entry: Record<string, unknown>): void
  close(): void
}

class StreamSink implements AccessLogSink {
  private readonly out: NodeJS.WritableStream
  private readonly owned: WriteStream | null
  constructor(out: NodeJS.WritableStream, owned: WriteStream | null) {
    this.out = out
    this.owned = owned
  }
  write(entry: Record<string, unknown>): void {
    this.out.write(`${JSON.stringify(entry)}\n`)
  }
  close(): void {
    this.owned?.end()
  }
}

export function createAccessLogs(configs: readonly AccessLog[] | undefined): AccessLogSink[] {
  const out: AccessLogSink[] = []
  for (const c of configs ?? []) {
    const t = c.typed_config
    if (t['@type'] === TypeUrls.stdoutLog) out.push(new StreamSink(process.stdout, null))
    else if (t['@type'] === TypeUrls.stderrLog) out.push(new StreamSink(process.stderr, null))
    else {
      const ws = createWriteStream(t.path, { flags: 'a' })
      ws.on('error', () => {})
      out.push(new StreamSink(ws, ws))
    }
  }
  return out
}
