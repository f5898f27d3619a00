"""Postmark: sending (postmark.sending), webhooks, suppression sync and hosted unsubscribe, each its own module.

The names below are re-exported for `from newsletter.transports.postmark import …`. What Postmark does and why the
code does what it does: docs/providers/postmark.md.
"""

from newsletter.transports.postmark.common import METADATA_KEY as METADATA_KEY
from newsletter.transports.postmark.sending import ACCOUNT_CODES as ACCOUNT_CODES
from newsletter.transports.postmark.sending import BATCH_PATH as BATCH_PATH
from newsletter.transports.postmark.sending import CUSTOM_HEADERS as CUSTOM_HEADERS
from newsletter.transports.postmark.sending import DEFAULT_STREAM as DEFAULT_STREAM
from newsletter.transports.postmark.sending import ERROR_LABELS as ERROR_LABELS
from newsletter.transports.postmark.sending import INACTIVE_RECIPIENT as INACTIVE_RECIPIENT
from newsletter.transports.postmark.sending import MAX_MESSAGES as MAX_MESSAGES
from newsletter.transports.postmark.sending import MAX_PAYLOAD_BYTES as MAX_PAYLOAD_BYTES
from newsletter.transports.postmark.sending import OPTIONS as OPTIONS
from newsletter.transports.postmark.sending import RETRY_CODES as RETRY_CODES
from newsletter.transports.postmark.sending import TRANSACTIONAL_STREAM as TRANSACTIONAL_STREAM
from newsletter.transports.postmark.sending import PostmarkTransport as PostmarkTransport
from newsletter.transports.postmark.sending import address as address
from newsletter.transports.postmark.sending import build_payload as build_payload
from newsletter.transports.postmark.sending import encode as encode
from newsletter.transports.postmark.sending import outcome_for_result as outcome_for_result
from newsletter.transports.postmark.sending import parse_response as parse_response
from newsletter.transports.postmark.sync import READ_RETRY as READ_RETRY
from newsletter.transports.postmark.sync import SUPPRESSIONS_PATH as SUPPRESSIONS_PATH
from newsletter.transports.postmark.sync import PostmarkSuppressions as PostmarkSuppressions
from newsletter.transports.postmark.sync import parse_suppressions as parse_suppressions
from newsletter.transports.postmark.sync import suppressions_path as suppressions_path
from newsletter.transports.postmark.unsubscribe import PLACEHOLDER as PLACEHOLDER
from newsletter.transports.postmark.unsubscribe import STREAM_PATH as STREAM_PATH
from newsletter.transports.postmark.unsubscribe import PostmarkHostedUnsubscribe as PostmarkHostedUnsubscribe
from newsletter.transports.postmark.unsubscribe import hosted_unsubscribe as hosted_unsubscribe
from newsletter.transports.postmark.unsubscribe import stream_path as stream_path
from newsletter.transports.postmark.unsubscribe import stream_problem as stream_problem
from newsletter.transports.postmark.webhooks import PERMANENT_BOUNCE_TYPES as PERMANENT_BOUNCE_TYPES
from newsletter.transports.postmark.webhooks import SUPPRESSION_KINDS as SUPPRESSION_KINDS
from newsletter.transports.postmark.webhooks import UNSUBSCRIBE_BOUNCE_TYPE as UNSUBSCRIBE_BOUNCE_TYPE
from newsletter.transports.postmark.webhooks import PostmarkWebhooks as PostmarkWebhooks
from newsletter.transports.postmark.webhooks import parse_webhook as parse_webhook
from newsletter.transports.postmark.webhooks import verify_webhook as verify_webhook
