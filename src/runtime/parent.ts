/**
 * Loom processes that `loom up` starts (the control plane, sidecars, gateways) stop when `loom up` is gone, even
 * when it was killed with SIGKILL and could not stop them: `loom up` gives them an IPC channel, which the kernel
 * closes when `loom up` dies, and its 'disconnect' event stops the process as SIGTERM would (drain, then exit).
 * Kept apart from the supervisor so the proxy's bundle does not load it.
 */
export function exitWithParent(): void {
  if (process.env.LOOM_EXIT_WITH_PARENT !== '1' || process.channel === undefined) return
  // the channel exists only to close; it must not keep the process alive, nor be passed on to its children
  process.channel.unref()
  delete process.env.LOOM_EXIT_WITH_PARENT
  process.once('disconnect', () => {
    process.stderr.write('[loom] the loom up process that started this one is gone; stopping\n')
    process.kill(process.pid, 'SIGTERM')
  })
}
