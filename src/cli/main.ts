/** The `loom` command. */
import { parseArgs } from 'node:util'
import { spawn } from 'node:child_process'
import type { Bootstrap } from '../config/envoy.js'
import { ConfigError, LoomError } from '../core/errors.js'
import { log } from '../core/log.js'
import { VERSION } from '../core/version.js'
import { ProxyServer } from '../proxy/proxy.js'

const USAGE = `loom: a service mesh you can read, run on a laptop and trust in production

Usage:
  loom proxy -c <bootstrap.yaml>   run the proxy from an Envoy-style static bootstrap
  loom validate -c <bootstrap.yaml> check a bootstrap without starting anything
  loom version                     print the version

Run 'loom <command> --help' for a command's options.
`

const PROXY_USAGE = `Usage: loom proxy -c <bootstrap.yaml|json> [options]

Runs the Loom proxy from an Envoy v3 static bootstrap (static_resources: listeners and clusters; admin).

Options:
  -c, --config <file>      bootstrap file, YAML or JSON (required)
      --drain-time-s <n>   on SIGTERM/SIGINT, how long in-flight requests may take to finish (default 5)
      --log-level <level>  debug | info | warn | error (default info; also LOOM_LOG)
  -h, --help               show this help

Examples:
  loom proxy -c examples/proxy/front-proxy.yaml
  curl localhost:9901/ready            # admin endpoint, when the bootstrap has an admin address
`

export async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv
  try {
    switch (cmd) {
      case 'proxy':
        return await proxyCommand(rest, false)
      case 'validate':
        return await proxyCommand(rest, true)
      case 'version':
      case '--version':
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
      process.exitCode = 1
    } else throw err
  }
}

async function proxyCommand(argv: string[], validateOnly: boolean): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      config: { type: 'string', short: 'c' },
      'drain-time-s': { type: 'string' },
      'log-level': { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  })
  if (values.help) {
    process.stdout.write(PROXY_USAGE)
    return
  }
  if (values.config === undefined) {
    process.stderr.write(`loom: -c <bootstrap file> is required\n\n${PROXY_USAGE}`)
    process.exitCode = 2
    return
  }
  if (values['log-level'] !== undefined) process.env.LOOM_LOG = values['log-level']
  const drainTimeMs = Number(values['drain-time-s'] ?? 5) * 1000
  if (validateOnly) {
    // the schema and YAML code is loaded only here: a running proxy never pays for it
    const { readBootstrapFile } = await import('../config/load.js')
    const bootstrap = readBootstrapFile(values.config)
    const proxy = new ProxyServer(bootstrap, { file: values.config, drainTimeMs })
    await proxy.close()
    process.stdout.write(values.json ? JSON.stringify(bootstrap) : `${values.config}: OK\n`)
    return
  }
  const bootstrap = await validateInChild(values.config)
  if (bootstrap === null) {
    process.exitCode = 1
    return
  }
  const proxy = new ProxyServer(bootstrap, { file: values.config, drainTimeMs })
  await proxy.start()
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
function validateInChild(file: string): Promise<Bootstrap | null> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [process.argv[1]!, 'validate', '--json', '-c', file], {
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
