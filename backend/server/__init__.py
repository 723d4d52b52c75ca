"""The Flask app speaking Label Studio's ML-backend protocol."""

from backend.server.app import create_app

__all__ = ["create_app"]
