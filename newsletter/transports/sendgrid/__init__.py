"""SendGrid: sending (sendgrid.sending), webhooks, suppression sync and hosted unsubscribe, each its own module.

The names below are re-exported for `from newsletter.transports.sendgrid import …`. What SendGrid does and why the
code does what it does: docs/providers/sendgrid.md.
"""

from newsletter.transports.sendgrid.sending import DEFAULT_HOST as DEFAULT_HOST
from newsletter.transports.sendgrid.sending import EU_HOST as EU_HOST
from newsletter.transports.sendgrid.sending import MAX_RECIPIENTS as MAX_RECIPIENTS
from newsletter.transports.sendgrid.sending import NOT_CUSTOM_HEADERS as NOT_CUSTOM_HEADERS
from newsletter.transports.sendgrid.sending import OUR_UNSUBSCRIBE_HEADERS as OUR_UNSUBSCRIBE_HEADERS
from newsletter.transports.sendgrid.sending import PATH as PATH
from newsletter.transports.sendgrid.sending import REGIONS as REGIONS
from newsletter.transports.sendgrid.sending import SUBSTITUTIONS_LIMIT as SUBSTITUTIONS_LIMIT
from newsletter.transports.sendgrid.sending import Content as Content
from newsletter.transports.sendgrid.sending import Fixed as Fixed
from newsletter.transports.sendgrid.sending import SendgridTransport as SendgridTransport
from newsletter.transports.sendgrid.sending import build_payload as build_payload
from newsletter.transports.sendgrid.sending import content_for as content_for
from newsletter.transports.sendgrid.sending import fixed_values as fixed_values
from newsletter.transports.sendgrid.sending import parse_response as parse_response
from newsletter.transports.sendgrid.sending import screen as screen
from newsletter.transports.sendgrid.sync import GROUP_PATH as GROUP_PATH
from newsletter.transports.sendgrid.sync import GROUP_SCOPES as GROUP_SCOPES
from newsletter.transports.sendgrid.sync import GROUP_SUPPRESSIONS_PATH as GROUP_SUPPRESSIONS_PATH
from newsletter.transports.sendgrid.sync import READ_RETRY as READ_RETRY
from newsletter.transports.sendgrid.sync import SUPPRESSION_LISTS as SUPPRESSION_LISTS
from newsletter.transports.sendgrid.sync import SUPPRESSION_PAGE_SIZE as SUPPRESSION_PAGE_SIZE
from newsletter.transports.sendgrid.sync import SUPPRESSION_SCOPES as SUPPRESSION_SCOPES
from newsletter.transports.sendgrid.sync import SendgridSuppressions as SendgridSuppressions
from newsletter.transports.sendgrid.sync import parse_group_suppressions as parse_group_suppressions
from newsletter.transports.sendgrid.sync import parse_suppressions as parse_suppressions
from newsletter.transports.sendgrid.unsubscribe import GROUP_PLACEHOLDER as GROUP_PLACEHOLDER
from newsletter.transports.sendgrid.unsubscribe import SendgridHostedUnsubscribe as SendgridHostedUnsubscribe
from newsletter.transports.sendgrid.webhooks import BOUNCED_DROP_REASON as BOUNCED_DROP_REASON
from newsletter.transports.sendgrid.webhooks import KEY_ARG as KEY_ARG
from newsletter.transports.sendgrid.webhooks import SIGNATURE_HEADER as SIGNATURE_HEADER
from newsletter.transports.sendgrid.webhooks import TIMESTAMP_HEADER as TIMESTAMP_HEADER
from newsletter.transports.sendgrid.webhooks import UNSUBSCRIBE_EVENTS as UNSUBSCRIBE_EVENTS
from newsletter.transports.sendgrid.webhooks import WEBHOOK_TOLERANCE as WEBHOOK_TOLERANCE
from newsletter.transports.sendgrid.webhooks import SendgridWebhooks as SendgridWebhooks
from newsletter.transports.sendgrid.webhooks import parse_webhook as parse_webhook
from newsletter.transports.sendgrid.webhooks import verify_webhook as verify_webhook
