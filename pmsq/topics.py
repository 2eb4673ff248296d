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
    """Whether ``topic`` matches ``pattern``.

    Linear in (pattern words x topic words), whatever the mix of ``#`` and
    ``*``: a backtracking matcher tried every split of the topic at every
    ``#`` and took seconds for one long topic against a pattern of many ``#``.
    """
    return _matches(pattern, topic)


@lru_cache(maxsize=8192)
def _matches(pattern: str, topic: str) -> bool:
    return _match_words(_compile(pattern), topic.split("."))


@lru_cache(maxsize=1024)
def _compile(pattern: str) -> tuple[str, ...]:
    """The pattern's words with runs of ``#`` collapsed: ``#.#`` matches what ``#`` does."""
    out: list[str] = []
    for word in pattern.split("."):
        if word == "#" and out and out[-1] == "#":
            continue
        out.append(word)
    return tuple(out)


def _match_words(pat: tuple[str, ...], words: list[str]) -> bool:
    # Simulate the pattern as an automaton: ``states`` holds every pattern
    # position reachable after the words read so far; a ``#`` at position i
    # both stays (it eats the word) and may be skipped (it matches nothing).
    end = len(pat)

    def closure(positions: set[int]) -> set[int]:
        out = set(positions)
        for i in sorted(positions):
            # Runs of # are collapsed, so one skip reaches the next non-# word.
            if i < end and pat[i] == "#":
                out.add(i + 1)
        return out

    states = closure({0})
    for word in words:
        step: set[int] = set()
        for i in states:
            if i == end:
                continue
            head = pat[i]
            if head == "#":
                step.add(i)
            elif head == "*" or head == word:
                step.add(i + 1)
        if not step:
            return False
        states = closure(step)
    return end in states
