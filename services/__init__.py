"""The four Mention Router services, the command line and the one-process runner."""
