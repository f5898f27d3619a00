"""Resend: sending (resend.sending) and webhooks, each its own module (Resend keeps no suppression list the tool
reads, and hosts no unsubscribe for batch emails).

The names below are re-exported for `from newsletter.transports.resend import …`. What Resend does and why the
code does what it does: docs/providers/resend.md.
"""

from newsletter.transports.resend.sending import ADVICE as ADVICE
from newsletter.transports.resend.sending import NOT_CUSTOM_HEADERS as NOT_CUSTOM_HEADERS
from newsletter.transports.resend.sending import PATH as PATH
from newsletter.transports.resend.sending import USER_AGENT as USER_AGENT
from newsletter.transports.resend.sending import ResendTransport as ResendTransport
from newsletter.transports.resend.sending import build_email as build_email
from newsletter.transports.resend.sending import build_payload as build_payload
from newsletter.transports.resend.sending import idempotency_key as idempotency_key
from newsletter.transports.resend.sending import mailbox as mailbox
from newsletter.transports.resend.sending import parse_response as parse_response
from newsletter.transports.resend.webhooks import KEY_TAG as KEY_TAG
from newsletter.transports.resend.webhooks import SECRET_PREFIX as SECRET_PREFIX
from newsletter.transports.resend.webhooks import WEBHOOK_TOLERANCE as WEBHOOK_TOLERANCE
from newsletter.transports.resend.webhooks import ResendWebhooks as ResendWebhooks
from newsletter.transports.resend.webhooks import parse_webhook as parse_webhook
from newsletter.transports.resend.webhooks import verify_webhook as verify_webhook
