"""The SQL the API's routes send, one module per resource: the route handlers call these functions and
build no statements of their own, so that a query and the index it relies on are read in one place."""
