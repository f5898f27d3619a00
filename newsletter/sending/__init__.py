"""Sending: from an issue to every member's inbox, through the leased campaign queue in the store.

    frozen.py   a campaign's frozen content (typed, versioned): what every sender builds its messages from, and
                what the archive shows; imports nothing of the send path, so `serve` and `archive` read it cheaply
    wiring.py   what a sender takes from the workspace: the store, the transport and its DKIM signer, the pacing;
                what it checks of its transport before it sends
    send.py     the `send` command (what it refuses, dry run, test send, schedule) and the campaign's lifecycle
                (status; pause, resume, cancel)
    runner.py   the campaign runner: claim, send, record; its guarantee
    worker.py   `newsletter worker`, the long-running sender

This file imports nothing, so that importing one module does not bring in the others.
"""
