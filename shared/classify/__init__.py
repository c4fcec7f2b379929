"""Classifier engines, shared by the classifier service and the batch command line."""

from shared.classify.engine import Engine, RuleEngine, detect_language
from shared.classify.language import language_or_none
from shared.classify.taxonomy import Taxonomy, TopicMatch

__all__ = ["Engine", "RuleEngine", "Taxonomy", "TopicMatch", "detect_language", "language_or_none"]
