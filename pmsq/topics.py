"""Topic names and subscription patterns (AMQP topic-exchange rules).

Words are separated by ``.``; in a pattern ``*`` matches exactly one word and
``#`` zero or more.
"""

from __future__ import annotations

import re
from functools import lru_cache

from pmsq.errors import ConfigurationError

__all__ = ["check_pattern", "check_topic", "matches"]

# Checked with fullmatch: "$" would also match before a final newline.
_WORD = re.compile(r"[A-Za-z0-9_\-:]+")


def check_topic(topic: object) -> str:
    """Return ``topic`` if it is a valid topic: dot-separated words, no wildcards.

    Raises:
        ConfigurationError: naming the problem.
    """
    if not isinstance(topic, str) or not topic or len(topic) > 255:
        raise ConfigurationError(f"invalid topic {topic!r}: use 1-255 characters")
    for word in topic.split("."):
        if not _WORD.fullmatch(word):
            raise ConfigurationError(
                f"invalid topic {topic!r}: words are A-Z a-z 0-9 _ - : separated by single dots"
            )
    return topic


def check_pattern(pattern: object) -> str:
    """Return ``pattern`` if valid: topic words, ``*`` or ``#`` separated by dots.

    Raises:
        ConfigurationError: naming the problem.
    """
    if not isinstance(pattern, str) or not pattern or len(pattern) > 255:
        raise ConfigurationError(f"invalid topic pattern {pattern!r}: use 1-255 characters")
    for word in pattern.split("."):
        if word not in ("*", "#") and not _WORD.fullmatch(word):
            raise ConfigurationError(
                f"invalid topic pattern {pattern!r}: words are A-Z a-z 0-9 _ - :, or * (one "
                "word) or # (zero or more words), separated by single dots"
            )
    return pattern


def matches(pattern: str, topic: str) -> bool:
    """Whether ``topic`` matches ``pattern``."""
    return _match_words(tuple(pattern.split(".")), tuple(topic.split(".")))


@lru_cache(maxsize=8192)
def _match_words(pat: tuple[str, ...], words: tuple[str, ...]) -> bool:
    if not pat:
        return not words
    head, rest = pat[0], pat[1:]
    if head == "#":
        return any(_match_words(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    if head == "*" or head == words[0]:
        return _match_words(rest, words[1:])
    return False
