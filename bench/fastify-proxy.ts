// @fastify/http-proxy as a plain reverse proxy, for comparison.
// Usage: node dist/bench/fastify-proxy.js <listenPort> <backendPort>
import proxy from '@fastify/http-proxy'
import Fastify from 'fastify'

const app = Fastify({ logger: false, bodyLimit: 1 << 20, keepAliveTimeout: 60_000 })
await app.register(proxy, {
  upstream: `http://127.0.0.1:${process.argv[3]}`,
  undici: { connections: 128, keepAliveTimeout: 60_000 },
})
await app.listen({ port: Number(process.argv[2]), host: '127.0.0.1' })
