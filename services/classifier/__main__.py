"""`python -m services.classifier`: the classifier service on its own, against Kafka and the database."""

from services.classifier.bootstrap import main

if __name__ == "__main__":
    main()
