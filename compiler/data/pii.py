"""Private data in training text: e-mail addresses, phone numbers, card numbers, IP addresses.

Detectors are regular expressions with validation where one exists (Luhn for cards, octet range
for IPv4, a digit count for phones), so that order numbers and dates are not flagged. Examples are
masked before they are shown: a diagnostic must not leak what it warns about.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
PHONE = re.compile(r"(?<![\w.])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,3}[ .-])\d{3,4}[ .-]\d{4}(?![\w.])")
CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
IPV4 = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d.])")


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def mask(kind: str, text: str) -> str:
    if kind == "email":
        local, _, domain = text.partition("@")
        return f"{local[:1]}***@{domain}"
    if kind == "ip":
        return text.split(".")[0] + ".*.*.*"
    digits = re.sub(r"\D", "", text)
    return "*" * max(0, len(digits) - 4) + digits[-4:]


def find(text: str) -> list[tuple[str, str]]:
    """(kind, matched text) for each private item in `text`."""
    found: list[tuple[str, str]] = []
    for m in EMAIL.finditer(text):
        found.append(("email", m.group()))
    for m in CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if 13 <= len(digits) <= 19 and luhn(digits):
            found.append(("card", m.group()))
    for m in PHONE.finditer(text):
        if 9 <= len(re.sub(r"\D", "", m.group())) <= 15 and not any(m.group() in c for k, c in found if k == "card"):
            found.append(("phone", m.group()))
    for m in IPV4.finditer(text):
        found.append(("ip", m.group()))
    return found


@dataclass
class PiiReport:
    counts: dict[str, int] = field(default_factory=dict)
    rows: int = 0
    examples: list[tuple[int, str, str]] = field(default_factory=list)  # (row index, kind, masked)

    def add(self, index: int, hits: list[tuple[str, str]], max_examples: int = 3) -> None:
        if not hits:
            return
        self.rows += 1
        for kind, text in hits:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            if len(self.examples) < max_examples:
                self.examples.append((index, kind, mask(kind, text)))


# A cheap pre-filter: the exact patterns (with look-arounds) run only on rows that have a digit run
# long enough for a phone, card or IPv4 address.
_DIGIT_RUN = re.compile(r"\d[\d .()+-]{5,}\d")


def find_many(texts: list[str]) -> dict[int, list[tuple[str, str]]]:
    """find() over many texts at once: each pattern scans one joined string (the regex engine's
    loop instead of a Python call per row and pattern), and hits map back to their row. Rows are
    joined with a NUL, which none of the patterns can span."""
    import bisect

    out: dict[int, list[tuple[str, str]]] = {}
    starts: list[int] = []
    pos = 0
    for t in texts:
        starts.append(pos)
        pos += len(t) + 1
    joined = "\x00".join(texts)
    candidates: set[int] = set()
    at = joined.find("@")
    while at >= 0:  # e-mail addresses need an @: find them without a regex
        candidates.add(bisect.bisect_right(starts, at) - 1)
        at = joined.find("@", at + 1)
    for m in _DIGIT_RUN.finditer(joined):  # cards, phones and IPs need a run of digits
        candidates.add(bisect.bisect_right(starts, m.start()) - 1)
    for i in sorted(candidates):  # the few rows with a candidate get the exact per-row checks
        hits = find(texts[i])
        if hits:
            out[i] = hits
    return out
