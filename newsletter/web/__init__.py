"""`newsletter serve`: the Starlette app (app.py) and its groups of routes, one module each."""

from newsletter.web.app import create_app

__all__ = ["create_app"]
