"""newsletter: write an email newsletter as files, check it, build it, preview it, send it."""

__version__ = "0.1.0"
