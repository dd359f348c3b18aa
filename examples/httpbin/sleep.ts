/**
 * `sleep` (Istio's `curl` sample): a client workload that does nothing by itself. It answers `200 sleep` on every
 * path, so its port shows it is running; requests "from sleep" go through its sidecar's outbound port (the
 * `HTTP_PROXY` it is given), as `curl` inside Istio's sleep pod goes through its sidecar.
 *
 * Env: PORT (8080; `loom up` sets it).
 */
import * as http from 'node:http'

const port = Number(process.env.PORT ?? 8080)
const server = http.createServer((_req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 6 })
  res.end('sleep\n')
})
server.listen(port, '127.0.0.1')
const stop = () => server.close(() => process.exit(0))
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
