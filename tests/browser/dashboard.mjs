// Uses the dashboard of a running `evtrack up` as a person would, in headless Chromium, and
// prints what it saw as JSON for the integration test to check against what was sent.
//
// usage: node dashboard.mjs ADDRESS READ_KEY WRITE_KEY RUN_ID SCREENSHOT_DIR
// The project holds the test's events (tracks named Viewed Pricing, Signed Up and Bought with
// properties.plan, users RUN_ID-u1…); this script sends 5 more ("Live Ping") once the live
// tail is open, and saves a PNG of each view into SCREENSHOT_DIR.

import { launch, watchedPage } from './browser.mjs'

const [address, readKey, writeKey, run, shots] = process.argv.slice(2)
const seen = {}
const browser = await launch()
const { page, problems } = await watchedPage(browser)
const shot = (name) => page.screenshot({ path: `${shots}/dashboard-${name}.png`, fullPage: true })
const event = (type, name) => JSON.stringify({ type, event: name })
const rows = (selector) => page.$$eval(`${selector} tbody tr`, (trs) => trs.map((tr) => [...tr.cells].map((td) => td.textContent)))

try {
  await page.goto(`${address}/`)

  // A key the server does not know: a clear message, and still the login.
  await page.fill('#key', 'evtr_' + 'x'.repeat(36))
  await page.click('#login-form button')
  await page.waitForSelector('#login-error:not([hidden])')
  seen.wrong_key = await page.textContent('#login-error')
  seen.wrong_key_still_at_login = await page.isVisible('#login') && !(await page.isVisible('#nav')) &&
    !(await page.isVisible('#trends'))
  await shot('wrong-key')
  const expectedFailures = problems.errors.length // the browser logs the 401 itself

  await page.fill('#key', readKey)
  await page.click('#login-form button')
  await page.waitForSelector('#trend-totals tbody tr')
  seen.key_in_session_storage = await page.evaluate(() => sessionStorage.getItem('evtrack.key')?.slice(0, 5))

  // Trends: one event, then broken down by plan.
  await page.selectOption('#trend-event', event('track', 'Viewed Pricing'))
  await page.waitForFunction(() => document.querySelector('#trend-totals td')?.textContent === 'Viewed Pricing')
  seen.trend = await rows('#trend-totals')
  seen.trend_canvas = await page.$$eval('#trend-chart canvas', (canvases) => canvases.map((c) => [c.width, c.height]))
  seen.trend_legend = await page.$$eval('#trend-chart .u-legend .u-label', (labels) => labels.map((l) => l.textContent))
  await page.fill('#trend-breakdown', 'properties.plan')
  await page.dispatchEvent('#trend-breakdown', 'change')
  await page.waitForFunction(() => document.querySelectorAll('#trend-totals tbody tr').length > 1)
  seen.trend_by_plan = await rows('#trend-totals')
  seen.trend_by_plan_source = await page.textContent('#trend-source')
  seen.top_events = await rows('#top-events')
  await shot('trends')

  // Funnel: Viewed Pricing → Signed Up → Bought.
  await page.click('#nav a[href="#funnel"]')
  await page.click('#funnel-add')
  const steps = await page.$$('#funnel-steps select')
  for (const [index, name] of ['Viewed Pricing', 'Signed Up', 'Bought'].entries()) {
    await steps[index].selectOption(event('track', name))
  }
  await page.click('#funnel-run')
  await page.waitForFunction(() => document.querySelectorAll('#funnel-result tbody tr').length === 3)
  seen.funnel = await page.$$eval('#funnel-result tbody tr', (trs) => trs.map((tr) => Number(tr.dataset.users)))
  await shot('funnel')

  // Retention: daily, any event.
  await page.click('#nav a[href="#retention"]')
  await page.waitForSelector('#retention-result tbody tr')
  seen.retention = await page.$$eval('#retention-result tbody tr', (trs) =>
    trs.map((tr) => ({ start: tr.dataset.start, returned: JSON.parse(tr.dataset.returned) })))
  await shot('retention')

  // A user's timeline.
  await page.click('#nav a[href="#user"]')
  await page.fill('#user-id', `${run}-u1`)
  await page.click('#user-form button')
  await page.waitForSelector('#user-events tbody tr')
  seen.timeline = (await rows('#user-events')).map((cells) => cells[2])
  seen.profile_shown = await page.isVisible('#user-profile')
  await shot('timeline')

  // Its group, from the timeline's links, with its members; then the groups by id prefix.
  seen.user_groups = await page.$$eval('#user-groups a', (links) => links.map((a) => a.textContent))
  await page.click('#user-groups a')
  await page.waitForSelector('#group-members tbody tr')
  seen.group_members = (await rows('#group-members')).map((cells) => cells[0])
  seen.group_profile = JSON.parse(await page.textContent('#group-profile'))
  await shot('group')
  await page.fill('#group-id', run)
  await page.click('#group-form button')
  await page.waitForSelector('#group-list tbody tr')
  seen.group_list = (await rows('#group-list')).map((cells) => cells[0])

  // The live tail: events sent now appear once each.
  await page.click('#nav a[href="#live"]')
  await page.waitForSelector('#live-events tbody tr')
  const batch = Array.from({ length: 5 }, (_, i) => ({
    type: 'track', event: 'Live Ping', userId: `${run}-live`, messageId: `${run}-live-${i}`, properties: { i },
  }))
  const sent = await fetch(`${address}/v1/batch`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Basic ${btoa(`${writeKey}:`)}` },
    body: JSON.stringify({ batch }),
  })
  if (!sent.ok) throw new Error(`sending the live pings: ${sent.status}`)
  await page.waitForFunction(
    () => [...document.querySelectorAll('#live-events tbody tr')].filter((tr) => tr.cells[2].textContent === 'Live Ping').length >= 5,
    null, { timeout: 30_000 })
  await page.waitForTimeout(2500) // one more poll: nothing may come twice
  seen.live_pings = (await rows('#live-events')).filter((cells) => cells[2] === 'Live Ping').length
  seen.live_ids_unique = await page.$$eval('#live-events tbody tr', (trs) => new Set(trs.map((tr) => tr.dataset.id)).size === trs.length)
  await shot('live')

  // Signing out forgets the key.
  await page.click('#sign-out')
  seen.signed_out = await page.isVisible('#login') && (await page.evaluate(() => sessionStorage.getItem('evtrack.key'))) === null

  seen.errors = problems.errors.slice(expectedFailures)
  seen.expected_failures = problems.errors.slice(0, expectedFailures)
  seen.csp_violations = problems.violations
} catch (error) {
  await shot('failure').catch(() => {})
  console.error(`${error.stack}\nseen so far: ${JSON.stringify(seen)}\nproblems: ${JSON.stringify(problems)}`)
  process.exitCode = 1
} finally {
  await browser.close()
}
console.log(JSON.stringify(seen))
