"""The REST API over stored mentions, queues and sources."""
