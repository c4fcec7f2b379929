"""Classifier: labels topics, sentiment and language, publishes `mentions.classified`."""
