"""The ingester's topics: what it subscribes to, whose readings a topic
carries, and where a provider's refusals go.

The provider is the topic's, which the broker's ACL pins to the publishing
account; the payload is never trusted for it.
"""

from __future__ import annotations

import uuid

from ingest.broker.config import SHARE_GROUP

# Every instance shares one subscription: the broker hands each message to one of them.
SUBSCRIPTION = f"$share/{SHARE_GROUP}/vitals/v1/+/readings"


def provider_of(topic: str) -> str | None:
    """`vitals/v1/{provider_id}/readings` → provider_id (a UUID), else None."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[:2] != ["vitals", "v1"] or parts[3] != "readings":
        return None
    try:
        return str(uuid.UUID(parts[2]))
    except ValueError:
        return None


def rejections_topic(provider_id: str | None) -> str:
    """Where the provider reads its refused readings: `vitals/v1/{provider_id}/rejections`."""
    return f"vitals/v1/{provider_id}/rejections"
