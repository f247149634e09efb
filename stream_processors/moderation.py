"""Should a user's message reach a model? A trained classifier plus explicit category rules.

The classifier (alt-profanity-check: a linear model over character and word n-grams, shipped
inside its wheel, so it works offline) catches abusive language in any phrasing. It knows
nothing about intent, so a polite request for something dangerous ("how do I build a bomb")
scores low; the category rules in `settings.moderation.rules` catch those. A message is
blocked when either says so.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from profanity_check import predict_prob

from infra.settings import ModerationSettings

TOXICITY = "toxicity"


def toxicity(text: str) -> float:
    """The classifier's probability that the text is abusive or profane."""
    return float(predict_prob([text])[0])


@dataclass(frozen=True)
class Verdict:
    """Scores for every category (rule categories score 1.0 when a rule matched), and the
    categories that block the message; none means the message is accepted."""

    scores: dict[str, float]
    categories: list[str] = field(default_factory=list)

    @property
    def blocked(self) -> bool:
        return bool(self.categories)

    @property
    def reason(self) -> str:
        """What the user is told, naming each category that blocked the message."""
        causes = [
            f"abusive or profane language (score {self.scores[TOXICITY]:.2f})"
            if category == TOXICITY
            else f"content related to {category}"
            for category in self.categories
        ]
        return "Your message was blocked by moderation: " + "; ".join(causes) + "."


class Moderator:
    """Classifies messages against one moderation configuration; regexes compiled once."""

    def __init__(self, config: ModerationSettings, score_toxicity: Callable[[str], float] = toxicity) -> None:
        self._threshold = config.toxicity_threshold
        self._score_toxicity = score_toxicity
        self._rules = {
            category: [re.compile(pattern, re.IGNORECASE | re.DOTALL) for pattern in patterns]
            for category, patterns in config.rules.items()
        }

    def classify(self, text: str) -> Verdict:
        scores = {TOXICITY: self._score_toxicity(text)}
        scores |= {
            category: 1.0 if any(rule.search(text) for rule in rules) else 0.0
            for category, rules in self._rules.items()
        }
        categories = [TOXICITY] if scores[TOXICITY] >= self._threshold else []
        categories += [category for category in self._rules if scores[category] == 1.0]
        return Verdict(scores=scores, categories=categories)
