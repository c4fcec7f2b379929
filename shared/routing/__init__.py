"""Routing rules: which departments get a classified mention, with what priority and SLA, and which tags.

Serves the router (every mention) and the API (validation of edited rule sets, dry runs). Pure: no I/O
beyond reading a YAML file.

A rule set is an ordered list of rules and a fallback target. Each rule has conditions (`when`, all must
hold) and actions: `route` (departments with a priority and an SLA), `tags`, and `stop` (end the evaluation
when this rule matches). A mention no rule routes goes to the fallback. `RuleSet.to_dict()` is the canonical
form `RuleSet.from_dict()` accepts; `from_dict` refuses an invalid set with a `RuleError` that names the rule.

Speed: the router evaluates every mention against every rule, so the set is compiled once into bitmasks
(one bit per rule, a Python int): per condition value, the rules that accept it (topic, sentiment, intent,
kind, language, source, author, suggested department) and per numeric condition sorted thresholds with
cumulative masks (score, urgency, influence). A mention's candidates are the AND of a few dictionary
lookups and bisections; only the rules with text conditions (`keywords_any`, `text_query`) that are still
candidates, before the first certain `stop`, look at the text. `Rule.check` is the plain per-rule
definition of every condition; it explains dry runs, and the tests hold the compiled evaluator to a
straightforward loop.
"""

from shared.routing.model import CONDITIONS, FALLBACK, Decision, Rule, RuleError, RuleMatch, Target
from shared.routing.ruleset import RuleSet

__all__ = ["CONDITIONS", "FALLBACK", "Decision", "Rule", "RuleError", "RuleMatch", "RuleSet", "Target"]
