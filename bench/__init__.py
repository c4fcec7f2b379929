"""`make bench`: the pipeline's throughput, latency and memory, measured against a bare Kafka relay."""
