"""Sends events to an evtrack ingest through the real Python SDKs, unchanged but for their
host: segment-analytics-python (plain and gzip), rudder-sdk-python (gzip by default) and
posthog. Ids start with RUN_ID so the caller can find the rows.

usage: python_sdks.py HOST WRITE_KEY RUN_ID
Prints {"segment": n, "rudder": n, "posthog": n}; exits 1 if any SDK reported an error.
"""

import json
import sys

host, key, run = sys.argv[1:4]
errors = []


def on_error(sdk):
    def record(error, items):
        errors.append(f"{sdk}: {error!r} ({len(items)} items)")

    return record


def send_segment_calls(client, prefix):
    user = f"{run}-{prefix}-user"
    client.identify(user, {"plan": "pro", "sdk": prefix}, anonymous_id=f"{run}-{prefix}-anon")
    client.track(user, "Order Completed", {"total": 9.5, "currency": "EUR"})
    client.page(user, "Docs", "Intro", {"path": "/docs/intro"})
    client.screen(user, "App", "Settings", {"dark": True})
    client.group(user, f"{run}-{prefix}-group", {"seats": 3})
    client.alias(f"{run}-{prefix}-old", user)
    return 6


sent = {}

import segment.analytics as segment  # noqa: E402

sent["segment"] = 0
for gzip in (False, True):
    client = segment.Client(key, host=host, on_error=on_error("segment"), gzip=gzip, max_retries=2)
    sent["segment"] += send_segment_calls(client, "segment-gzip" if gzip else "segment")
    client.flush()
    client.join()

from rudderstack.analytics.client import Client as RudderClient  # noqa: E402

rudder = RudderClient(key, host=host, on_error=on_error("rudder"), max_retries=2)
sent["rudder"] = send_segment_calls(rudder, "rudder")
rudder.flush()
rudder.join()

from posthog import Posthog  # noqa: E402

posthog = Posthog(key, host=host, on_error=on_error("posthog"), gzip=True, max_retries=2)
user = f"{run}-posthog-user"
posthog.capture("file uploaded", distinct_id=user, properties={"size": 12}, groups={"company": f"{run}-posthog-acme"})
posthog.capture("$pageview", distinct_id=user, properties={"title": "Home", "$current_url": "https://x.example/"})
posthog.set(distinct_id=user, properties={"email": "ada@example.com"})
posthog.alias(previous_id=f"{run}-posthog-anon", distinct_id=user)
# Without a distinct_id (posthog 7 sends a random one): sets the group's traits, makes no member.
posthog.group_identify("company", f"{run}-posthog-acme", {"seats": 5})
sent["posthog"] = 5
posthog.flush()
posthog.shutdown()

print(json.dumps(sent))
if errors:
    print("\n".join(errors), file=sys.stderr)
    sys.exit(1)
