// Headless Chromium for the browser tests: Debian's chromium (EVTRACK_TEST_CHROMIUM), driven
// by playwright-core. Every page records what would make a test untrustworthy: page errors,
// console errors and Content-Security-Policy violations.

import { chromium } from 'playwright-core'

export async function launch() {
  const executablePath = process.env.EVTRACK_TEST_CHROMIUM
  if (!executablePath) throw new Error('EVTRACK_TEST_CHROMIUM is not set: run the tests with infra/dev.sh test')
  // No sandbox: the tests may run as root, where Chromium refuses its sandbox.
  return chromium.launch({ executablePath, args: ['--no-sandbox'] })
}

export async function watchedPage(browser, options = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, timezoneId: 'UTC', ...options })
  const page = await context.newPage()
  const problems = { errors: [], violations: [] }
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (event) => {
      console.error(`CSP violation: ${event.violatedDirective} blocked ${event.blockedURI}`)
    })
  })
  page.on('pageerror', (error) => problems.errors.push(`page error: ${error.message}`))
  page.on('console', (message) => {
    if (message.type() !== 'error') return
    const text = message.text()
    if (text.includes('CSP violation') || text.includes('Content Security Policy')) problems.violations.push(text)
    else problems.errors.push(`console: ${text}`)
  })
  return { context, page, problems }
}
