// Sends events to an evtrack ingest through the real Node SDKs, unchanged but for their
// host: @segment/analytics-node and posthog-node. Ids start with RUN_ID.
//
// usage: node send.mjs HOST WRITE_KEY RUN_ID
// Prints {"segment-node": n, "posthog-node": n}; exits 1 if any SDK reported an error.

import { Analytics } from '@segment/analytics-node'
import { PostHog } from 'posthog-node'

const [host, key, run] = process.argv.slice(2)
const errors = []
const sent = {}

const segment = new Analytics({ writeKey: key, host, maxRetries: 2, flushInterval: 100 })
segment.on('error', (error) => errors.push(`segment-node: ${error?.reason ?? error?.code ?? error}`))
const user = `${run}-segment-node-user`
segment.identify({ userId: user, anonymousId: `${run}-segment-node-anon`, traits: { plan: 'pro' } })
segment.track({ userId: user, event: 'Order Completed', properties: { total: 9.5 } })
segment.page({ userId: user, category: 'Docs', name: 'Intro', properties: { path: '/docs/intro' } })
segment.screen({ userId: user, name: 'Settings' })
segment.group({ userId: user, groupId: `${run}-segment-node-group`, traits: { seats: 3 } })
segment.alias({ userId: user, previousId: `${run}-segment-node-old` })
sent['segment-node'] = 6
await segment.closeAndFlush({ timeout: 10000 })

const posthog = new PostHog(key, { host, flushAt: 10, flushInterval: 100, fetchRetryCount: 2 })
posthog.on('error', (error) => errors.push(`posthog-node: ${error?.message ?? error}`))
const distinctId = `${run}-posthog-node-user`
posthog.capture({ distinctId, event: 'file uploaded', properties: { size: 12 }, groups: { company: `${run}-posthog-node-acme` } })
posthog.identify({ distinctId, properties: { email: 'ada@example.com' } })
posthog.alias({ distinctId: `${run}-posthog-node-anon`, alias: distinctId })
posthog.groupIdentify({ groupType: 'company', groupKey: `${run}-posthog-node-acme`, properties: { seats: 5 }, distinctId })
sent['posthog-node'] = 4
await posthog.shutdown(10000)

console.log(JSON.stringify(sent))
if (errors.length > 0) {
  console.error(errors.join('\n'))
  process.exit(1)
}
