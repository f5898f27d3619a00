"""Returned mail for SMTP senders: the bounce mailbox read (mailbox.py), each message classified (classify.py,
heuristics.py), matched to a member and a campaign (matching.py), acted on and filed (scan.py)."""
