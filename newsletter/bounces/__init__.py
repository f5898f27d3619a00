"""Returned mail for SMTP senders: what a bounce, complaint or auto-reply says, and whom it is about."""
