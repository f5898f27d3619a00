"""SendGrid's hosted unsubscribe (?unsubscribe=provider&group=ID): an unsubscribe group's placeholder, and
preflight(), which reads the group before anything is sent (docs/providers/sendgrid.md, Unsubscribe).
"""

from __future__ import annotations

import json
from typing import Any

from newsletter.errors import NewsletterError
from newsletter.transports._http import short
from newsletter.transports.base import (
    TransportError,
)
from newsletter.transports.sendgrid.sync import GROUP_PATH, GROUP_SCOPES, SendgridSuppressions

# The unsubscribe group's own page ("Unsubscribe From This List") as a bare URL, for an href and the text part.
# Subscription tracking appends a second link unless the group's own is there: docs/providers/sendgrid.md
GROUP_PLACEHOLDER = "<%asm_group_unsubscribe_raw_url%>"


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


class SendgridHostedUnsubscribe(SendgridSuppressions):
    """SendgridTransport's preflight()."""

    async def preflight(self) -> None:
        """With unsubscribe=provider, check that the unsubscribe group exists (GET /v3/asm/groups/ID): refuse
        (NewsletterError) when SendGrid does not know it. Raise TransportError when SendGrid cannot tell (key
        refused, no answer after READ_RETRY.attempts tries). Nothing to check for unsubscribe=own."""
        if self.group_id is None:
            return
        path = GROUP_PATH.format(group_id=self.group_id)
        status, body = await self._get(path, None, GROUP_SCOPES, missing_ok=True, again="try again later")
        if status == 404:
            raise NewsletterError(
                f"sendgrid+api://…?group={self.group_id}: SendGrid has no unsubscribe group {self.group_id} in this "
                "account; create one under Suppressions > Unsubscribe Groups and write its ID in group="
            )
        data = _json_or_none(body)
        if not isinstance(data, dict) or data.get("id") not in (self.group_id, str(self.group_id)):
            raise TransportError(f"SendGrid answered GET {path} with something else than that group: {short(body)}")
