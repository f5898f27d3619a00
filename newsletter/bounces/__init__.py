"""Bounces for SMTP senders: the bounce mailbox read, its messages classified (DSN, ARF, auto-replies)."""
