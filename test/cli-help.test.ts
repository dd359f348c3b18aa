/** Every command `loom --help` lists has its own `--help`, with an Examples section. */
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { runLoom } from './helpers/proxy.js'

describe('loom <command> --help', () => {
  test('every command in loom --help has examples', async () => {
    const top = await runLoom(['--help'])
    assert.equal(top.code, 0)
    const commands = [...new Set([...top.stdout.matchAll(/^ {2}loom ([a-z][a-z-]*)/gm)].map((m) => m[1]!))]
    // the list is read from the help itself, so a new command shows up here by being listed there
    assert.ok(commands.length >= 15, `commands found: ${commands.join(' ')}`)
    for (const c of ['apply', 'analyze', 'validate', 'proxy', 'control', 'down', 'status', 'logs']) {
      assert.ok(commands.includes(c), `loom --help lists ${c}`)
    }
    const missing: string[] = []
    await Promise.all(
      commands.map(async (c) => {
        const r = await runLoom([c, '--help'])
        if (r.code !== 0 || !/^Usage: /m.test(r.stdout) || !/\nExamples:\n {2}\S/.test(r.stdout)) {
          missing.push(`${c} (exit ${r.code}): ${r.stdout.slice(0, 80)}${r.stderr.slice(0, 80)}`)
        }
      }),
    )
    assert.deepEqual(missing.sort(), [])
  })
})
