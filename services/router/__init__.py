"""Router: assigns mentions to departments, stores them, publishes to each department's topic."""
