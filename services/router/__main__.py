"""`python -m services.router`: the router service on its own, against Kafka and the database."""

from services.router.bootstrap import main

if __name__ == "__main__":
    main()
