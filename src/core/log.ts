/** Structured JSON logs on stderr. One line per event; `LOOM_LOG=debug|info|warn|error` sets the level. */
const levels = { debug: 10, info: 20, warn: 30, error: 40 } as const
export type Level = keyof typeof levels

let threshold: number = levels[(process.env.LOOM_LOG as Level | undefined) ?? 'info'] ?? levels.info

export function setLogLevel(level: Level): void {
  threshold = levels[level]
}

export function log(level: Level, scope: string, msg: string, fields?: Record<string, unknown>): void {
  if (levels[level] < threshold) return
  const line = { time: new Date().toISOString(), level, scope, msg, ...fields }
  process.stderr.write(`${JSON.stringify(line)}\n`)
}
