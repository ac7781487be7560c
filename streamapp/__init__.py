"""streamapp: the event backbone of a video-streaming platform."""
from .app import app

__all__ = ["app"]
