"""Should a user's message reach a model? A trained classifier plus explicit category rules.

The classifier (alt-profanity-check: a linear model over character and word n-grams, shipped
inside its wheel, so it works offline) catches abusive language in any phrasing. It knows
nothing about intent, so a polite request for something dangerous ("how do I build a bomb")
scores low; the category rules in `settings.moderation.rules` catch those. A message is
blocked when either says so.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from profanity_check import profanity_check as shipped

from infra.settings import ModerationSettings

TOXICITY = "toxicity"
SUPPORTED_VECTORIZER = {"norm": "l2", "use_idf": True, "sublinear_tf": False, "binary": False}


class ToxicityClassifier:
    """alt-profanity-check's model, evaluated on one message's own words.

    The shipped model is a TF-IDF vectorizer (words, English stop words, l2 norm) and five
    sigmoid-calibrated linear SVMs whose probabilities are averaged. `profanity_check.predict_prob`
    computes that through sklearn's `transform` and `predict_proba`, whose input validation costs
    ~2-5 ms a call whatever the text, most of the processors' CPU per message. The same arithmetic
    on the handful of features a message has costs tens of microseconds; the unit tests hold it
    equal to `predict_prob`. A model shipped with other vectorizer settings is refused at start.
    """

    def __init__(self, vectorizer: Any, model: Any) -> None:
        settings = {name: vectorizer.get_params()[name] for name in SUPPORTED_VECTORIZER}
        if settings != SUPPORTED_VECTORIZER or model.method != "sigmoid":
            raise ValueError(f"unsupported toxicity model: vectorizer {settings}, calibration {model.method}")
        classifiers = model.calibrated_classifiers_
        self._analyze = vectorizer.build_analyzer()
        self._vocabulary: dict[str, int] = vectorizer.vocabulary_
        self._idf = vectorizer.idf_
        self._weights = np.vstack([c.estimator.coef_.ravel() for c in classifiers]).T  # features x classifiers
        self._intercepts = np.array([c.estimator.intercept_[0] for c in classifiers])
        self._slopes = np.array([c.calibrators[0].a_ for c in classifiers])
        self._offsets = np.array([c.calibrators[0].b_ for c in classifiers])

    def __call__(self, text: str) -> float:
        """The probability that the text is abusive or profane."""
        counts = Counter(self._vocabulary[word] for word in self._analyze(text) if word in self._vocabulary)
        decisions = self._intercepts
        if counts:
            features = np.fromiter(counts, dtype=np.intp, count=len(counts))
            tfidf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts)) * self._idf[features]
            decisions = tfidf / np.linalg.norm(tfidf) @ self._weights[features] + self._intercepts
        return float(np.mean(1.0 / (1.0 + np.exp(self._slopes * decisions + self._offsets))))


toxicity = ToxicityClassifier(shipped.vectorizer, shipped.model)


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
