import assert from 'node:assert/strict'
import { test } from 'node:test'
import { deferWrite } from './write-batch.js'

test('deferred writers are flushed together, in order, once the current callback is over', async () => {
  const order: string[] = []
  const w = (name: string) => ({ flushDeferred: () => order.push(name) })
  deferWrite(w('a'))
  deferWrite(w('b'))
  order.push('sync')
  await new Promise<void>((resolve) => setImmediate(resolve))
  assert.deepEqual(order, ['sync', 'a', 'b'])
})

test('one writer that throws does not keep the others from flushing', async () => {
  const flushed: string[] = []
  const errors: unknown[] = []
  const onError = (err: unknown) => errors.push(err)
  const saved = process.listeners('uncaughtException')
  process.removeAllListeners('uncaughtException')
  process.on('uncaughtException', onError)
  try {
    deferWrite({ flushDeferred: () => flushed.push('first') })
    deferWrite({
      flushDeferred: () => {
        throw new Error('boom')
      },
    })
    deferWrite({ flushDeferred: () => flushed.push('third') })
    await new Promise<void>((resolve) => setImmediate(() => setImmediate(resolve)))
  } finally {
    process.removeListener('uncaughtException', onError)
    for (const l of saved) process.on('uncaughtException', l)
  }
  assert.deepEqual(flushed, ['first', 'third'])
  assert.equal(errors.length, 1)
  assert.equal((errors[0] as Error).message, 'boom')
})
