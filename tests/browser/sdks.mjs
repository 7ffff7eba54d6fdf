// The browser SDKs, from npm and unchanged, in headless Chromium: pages served from an origin
// of their own (another port, so every request to evtrack is cross-origin, with CORS
// preflights as on a customer's site), pointed at a running `evtrack up`.
//
// usage: node sdks.mjs HOST WRITE_KEY RUN_ID
// Each page views, tracks "Clicked Buy", identifies RUN_ID-<sdk>-user with traits, then is
// left (navigation: pagehide), when an SDK with an unload path sends one more event. Prints
// {"userAgent": …, "pages": {<sdk>: <page url>}} for the test to find the events by their
// context.page.url; exits 1 on an error in a page.

import { createServer } from 'node:http'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { launch, watchedPage } from './browser.mjs'

const [host, key, run] = process.argv.slice(2)
const modules = join(import.meta.dirname, 'node_modules')

const SDK_FILES = {
  '/sdk/analytics-next.js': '@segment/analytics-next/dist/umd/index.js',
  '/sdk/rudderstack.js': '@rudderstack/analytics-js/dist/npm/modern/bundled/umd/index.js',
  '/sdk/posthog.js': 'posthog-js/dist/array.full.js',
}

// What each page runs once its SDK is loaded; `window.leave` is called on pagehide, and
// `window.beforeLeave` just before the test leaves the page.
// The configuration is what README.md tells users to write.
const PAGE_SCRIPTS = {
  segment: (user) => segment(user, 'standard'),
  'segment-batching': (user) => segment(user, 'batching'),
  rudderstack: (user) => rudderstack(user, false),
  'rudderstack-beacon': (user) => rudderstack(user, true),
  posthog: (user) => `
    posthog.init(KEY, { api_host: HOST, opt_out_useragent_filter: true, advanced_disable_flags: true,
      disable_surveys: true, disable_session_recording: true, autocapture: false })
    posthog.capture('Clicked Buy', { price: 9.5 })
    posthog.identify('${user}', { plan: 'pro', email: 'ada@example.com' })
    posthog.group('company', '${user}-acme', { seats: 3 })`,
}

// analytics-next sends each event as it comes ("standard"), or in batches that it also sends,
// with keepalive, when the page is hidden ("batching"): its unload path. Its track() is
// asynchronous: called from a pagehide listener, the event reaches the buffer after the SDK's
// own pagehide flush and waits in localStorage for the next visit (seen with 1.84.3), so
// "Page Left" is tracked just before leaving and goes out with the flush.
function segment(user, strategy) {
  const delivery = strategy === 'batching' ? "{ strategy: 'batching', config: { size: 20, timeout: 60000 } }" : "{ strategy: 'standard' }"
  return `
    const [analytics] = await AnalyticsNext.AnalyticsBrowser.load(
      { writeKey: KEY, cdnSettings: { integrations: { 'Segment.io': { apiKey: KEY } } } },
      { integrations: { 'Segment.io': { apiHost: HOST.replace(/^https?:\\/\\//, '') + '/v1', protocol: HOST.split(':')[0],
          deliveryStrategy: ${delivery} } } })
    await analytics.page()
    await analytics.track('Clicked Buy', { price: 9.5 })
    await analytics.identify('${user}', { plan: 'pro', email: 'ada@example.com' })
    ${strategy === 'batching' ? "window.beforeLeave = () => { analytics.track('Page Left') }" : ''}`
}

function rudderstack(user, beacon) {
  return `
    const rudderanalytics = new window.rudderanalytics.RudderAnalytics()
    rudderanalytics.load(KEY, HOST, { configUrl: HOST, useBeacon: ${beacon} })
    await new Promise((ready) => rudderanalytics.ready(ready))
    rudderanalytics.page()
    rudderanalytics.track('Clicked Buy', { price: 9.5 })
    rudderanalytics.identify('${user}', { plan: 'pro', email: 'ada@example.com' })
    ${beacon ? "window.leave = () => rudderanalytics.track('Page Left')" : ''}`
}

const SDK_OF_PAGE = { segment: 'analytics-next', 'segment-batching': 'analytics-next', rudderstack: 'rudderstack', 'rudderstack-beacon': 'rudderstack', posthog: 'posthog' }

function page(name) {
  // The pagehide listener comes before the SDK's own, so that its event is queued before the
  // SDK flushes on the same pagehide.
  return `<!doctype html><html><head><meta charset="utf-8"><title>Shop</title></head><body>
<h1>Shop</h1>
<script>window.addEventListener('pagehide', () => window.leave?.())</script>
<script src="/sdk/${SDK_OF_PAGE[name]}.js"></script>
<script type="module">
  const HOST = ${JSON.stringify(host)}, KEY = ${JSON.stringify(key)}
  try {
    ${PAGE_SCRIPTS[name](`${run}-${name}-user`)}
    window.sdkReady = true
  } catch (error) {
    window.sdkError = String(error?.stack ?? error)
  }
</script></body></html>`
}

const server = createServer(async (request, response) => {
  const url = new URL(request.url, 'http://localhost')
  const name = url.pathname.slice(1).replace(/\.html$/, '')
  if (SDK_FILES[url.pathname]) {
    response.writeHead(200, { 'content-type': 'text/javascript' })
    response.end(await readFile(join(modules, SDK_FILES[url.pathname])))
  } else if (PAGE_SCRIPTS[name]) {
    response.writeHead(200, { 'content-type': 'text/html' })
    response.end(page(name))
  } else if (url.pathname === '/favicon.ico') {
    response.writeHead(204).end()
  } else if (url.pathname === '/elsewhere.html') {
    response.writeHead(200, { 'content-type': 'text/html' })
    response.end('<!doctype html><title>Elsewhere</title><p>left the shop')
  } else {
    response.writeHead(404).end()
  }
})
await new Promise((listening) => server.listen(0, '127.0.0.1', listening))
const origin = `http://127.0.0.1:${server.address().port}`

const browser = await launch()
const report = { pages: {} }
const failures = []
try {
  for (const name of Object.keys(PAGE_SCRIPTS)) {
    const { context, page, problems } = await watchedPage(browser)
    // Requests to evtrack still open: the page is left only once its SDK has sent what it sends
    // while the page is shown (posthog-js batches for 3 s; what it still holds goes on unload).
    const open = new Set()
    const answered = new Set()
    const ours = (request) => request.url().startsWith(host)
    page.on('request', (request) => { if (ours(request)) open.add(request) })
    for (const done of ['requestfinished', 'requestfailed']) {
      page.on(done, (request) => {
        if (!ours(request)) return
        open.delete(request)
        if (done === 'requestfailed' && !answered.has(request)) failures.push(`${name}: ${request.method()} ${request.url()} failed: ${request.failure()?.errorText}`)
      })
    }
    // A keepalive fetch (analytics-next) gets its response but never "requestfinished".
    page.on('response', (response) => {
      if (ours(response.request())) open.delete(response.request()) && answered.add(response.request())
      if (ours(response.request()) && response.status() >= 300) failures.push(`${name}: ${response.request().method()} ${response.url()} answered ${response.status()}`)
    })
    const url = `${origin}/${name}.html?run=${run}`
    report.pages[name] = url
    await page.goto(url)
    await page.waitForFunction(() => window.sdkReady || window.sdkError, null, { timeout: 20_000 })
    const error = await page.evaluate(() => window.sdkError)
    if (error) failures.push(`${name}: ${error}`)
    report.userAgent ??= await page.evaluate(() => navigator.userAgent)
    for (let quiet = 0, waited = 0; quiet < 10; waited += 1) {
      if (waited > 150) throw new Error(`${name}: requests still open after 15 s: ${[...open].map((r) => r.url())}`)
      await page.waitForTimeout(100)
      quiet = open.size === 0 ? quiet + 1 : 0
    }
    if (await page.evaluate(() => Boolean(window.beforeLeave))) {
      await page.evaluate(() => window.beforeLeave())
      await page.waitForTimeout(200)
    }
    await page.goto(`${origin}/elsewhere.html`)
    await page.waitForTimeout(500)
    failures.push(...problems.errors.map((text) => `${name}: ${text}`), ...problems.violations.map((text) => `${name}: ${text}`))
    await context.close()
  }
} finally {
  await browser.close()
  server.close()
}
console.log(JSON.stringify(report))
if (failures.length) {
  console.error(failures.join('\n'))
  process.exitCode = 1
}
