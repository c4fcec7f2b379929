"""What the tests and the benchmarks share, and nothing else imports: a local feed server and webhook
receiver (the outside internet, faked on loopback), factories of feeds and events, Kafka helpers, processes
of the services, private brokers and databases, a TCP proxy for faults. It imports the services and shared
code, never the tests or the benchmarks (.importlinter)."""
