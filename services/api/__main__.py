"""`python -m services.api`: the REST API on MR_API_HOST:MR_API_PORT."""

from services.api.bootstrap import main

if __name__ == "__main__":
    main()
