"""Mailgun: sending (mailgun.sending), webhooks, suppression sync and hosted unsubscribe, each its own module.

The names below are re-exported for `from newsletter.transports.mailgun import …`. What Mailgun does and why the
code does what it does: docs/providers/mailgun.md.
"""

from newsletter.transports.mailgun.sending import KEY_RECIPIENT_VARIABLE as KEY_RECIPIENT_VARIABLE
from newsletter.transports.mailgun.sending import MAILGUN_HEADERS as MAILGUN_HEADERS
from newsletter.transports.mailgun.sending import MAX_BATCH as MAX_BATCH
from newsletter.transports.mailgun.sending import REGIONS as REGIONS
from newsletter.transports.mailgun.sending import MailgunTransport as MailgunTransport
from newsletter.transports.mailgun.sending import address_problem as address_problem
from newsletter.transports.mailgun.sending import batch_members as batch_members
from newsletter.transports.mailgun.sending import build_payload as build_payload
from newsletter.transports.mailgun.sending import local_outcomes as local_outcomes
from newsletter.transports.mailgun.sending import parse_response as parse_response
from newsletter.transports.mailgun.sync import NAME as NAME
from newsletter.transports.mailgun.sync import READ_RETRY as READ_RETRY
from newsletter.transports.mailgun.sync import SUPPRESSION_LISTS as SUPPRESSION_LISTS
from newsletter.transports.mailgun.sync import SUPPRESSION_PAGE_LIMIT as SUPPRESSION_PAGE_LIMIT
from newsletter.transports.mailgun.sync import MailgunSuppressions as MailgunSuppressions
from newsletter.transports.mailgun.sync import parse_suppressions as parse_suppressions
from newsletter.transports.mailgun.unsubscribe import MAX_TAG as MAX_TAG
from newsletter.transports.mailgun.unsubscribe import TAG_UNSUBSCRIBE_URL as TAG_UNSUBSCRIBE_URL
from newsletter.transports.mailgun.unsubscribe import MailgunHostedUnsubscribe as MailgunHostedUnsubscribe
from newsletter.transports.mailgun.unsubscribe import hosted_problem as hosted_problem
from newsletter.transports.mailgun.unsubscribe import hosted_unsubscribe as hosted_unsubscribe
from newsletter.transports.mailgun.unsubscribe import list_tag as list_tag
from newsletter.transports.mailgun.unsubscribe import tracking_problem as tracking_problem
from newsletter.transports.mailgun.webhooks import KEY_VARIABLE as KEY_VARIABLE
from newsletter.transports.mailgun.webhooks import WEBHOOK_MAX_AGE as WEBHOOK_MAX_AGE
from newsletter.transports.mailgun.webhooks import WEBHOOK_MAX_SKEW as WEBHOOK_MAX_SKEW
from newsletter.transports.mailgun.webhooks import WEBHOOK_TOKEN_KEPT as WEBHOOK_TOKEN_KEPT
from newsletter.transports.mailgun.webhooks import MailgunWebhooks as MailgunWebhooks
from newsletter.transports.mailgun.webhooks import parse_webhook as parse_webhook
from newsletter.transports.mailgun.webhooks import verify_webhook as verify_webhook
from newsletter.transports.mailgun.webhooks import webhook_token as webhook_token
