#!/usr/bin/env node
// The loom command. It runs the single-file build (dist/loom.mjs): one module loads faster and keeps a sidecar's
// resident memory several MB lower than hundreds of small ones.
import('../dist/bundle/loom.js').then((m) => m.main(process.argv.slice(2)))
