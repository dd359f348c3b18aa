/**
 * Browser tests: Debian's chromium (installed by .ci/run; never a browser a test tool downloads), driven by
 * playwright-core, headless, with a fresh user data directory per launch. Screenshots go to test-artifacts/ (or
 * LOOM_TEST_ARTIFACTS), kept after the run.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type BrowserContext, chromium, type Page } from 'playwright-core'

export const CHROMIUM = process.env.LOOM_CHROMIUM ?? '/usr/bin/chromium'

const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
]

export const ARTIFACTS =
  process.env.LOOM_TEST_ARTIFACTS ?? new URL('../../../test-artifacts/', import.meta.url).pathname

export interface Browser {
  context: BrowserContext
  page: Page
  /** every console error and page error, to assert on (a dashboard page should log none) */
  errors: string[]
  /** saves a full-page PNG as test-artifacts/<name>.png and returns its path */
  screenshot(name: string): Promise<string>
  close(): Promise<void>
}

export async function launchBrowser(): Promise<Browser> {
  if (!existsSync(CHROMIUM))
    throw new Error(`no chromium at ${CHROMIUM}: install Debian's chromium (bash .ci/run does) or set LOOM_CHROMIUM`)
  const userDataDir = mkdtempSync(join(tmpdir(), 'loom-chromium-'))
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: FLAGS,
    viewport: { width: 1400, height: 900 },
  })
  const page = context.pages()[0] ?? (await context.newPage())
  const errors: string[] = []
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text())
  })
  page.on('pageerror', (e) => errors.push(String(e)))
  return {
    context,
    page,
    errors,
    async screenshot(name) {
      mkdirSync(ARTIFACTS, { recursive: true })
      const path = join(ARTIFACTS, `${name}.png`)
      await page.screenshot({ path, fullPage: true })
      return path
    },
    async close() {
      await context.close().catch(() => {})
      rmSync(userDataDir, { recursive: true, force: true })
    },
  }
}
