"""Code every Mention Router service shares: settings, events, bus, database, domain logic."""
