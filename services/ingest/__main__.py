"""`python -m services.ingest`: the ingest service on its own, against Kafka and the database."""

from services.ingest.bootstrap import main

if __name__ == "__main__":
    main()
