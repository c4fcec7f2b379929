"""Ingest: polls RSS/Atom feeds and comment feeds, publishes each new mention to `mentions.raw`."""
