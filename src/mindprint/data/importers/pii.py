"""PII scrub: e-mail addresses, URLs, IBANs, card numbers, phone numbers and (optionally) the
names of the other people in a chat, each replaced by a placeholder and counted per kind.

* e-mail and URL: regular expressions (an address is found before the URL pass can eat it).
* IBAN: country code, two check digits and 11–30 letters/digits, accepted only when the ISO 13616
  mod-97 check holds, so a product code is left alone.
* card number: 13–19 digits (spaces or dashes allowed), accepted only when the Luhn check holds.
* phone: the ``phonenumbers`` library (Google's libphonenumber, well kept, pure Python) finds
  numbers that are *valid* for ``region`` (default ``US``) plus every ``+``-international number;
  dates, prices and times are not valid numbers, which a regex could not tell.
* names (``scrub_names``): the other speakers' full names and first names, whole words, case
  kept, become ``[person N]`` — the same N for one person across an import.

``scrubadub`` was weighed and not taken: it would add nltk, textblob, Faker, dateparser and
python-stdnum (nltk corpora for name detection that do not work offline without a download),
and its phone detector is this same ``phonenumbers`` library.
"""

from __future__ import annotations

import re
from collections import Counter

import phonenumbers

PLACEHOLDER = {"email": "[email]", "url": "[url]", "iban": "[iban]", "card": "[card]",
               "phone": "[phone]"}

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}\b")
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"']+[^\s<>\"'.,;:!?)\]]")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")


def iban_ok(candidate: str) -> bool:
    s = candidate.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    digits = "".join(str(int(c, 36)) for c in moved)
    return int(digits) % 97 == 1


def luhn_ok(candidate: str) -> bool:
    digits = [int(c) for c in candidate if c.isdigit()]
    if not 13 <= len(digits) <= 19 or len(set(digits)) == 1:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


class Scrubber:
    """``scrub(text)`` with counts per kind in ``counts``; ``enabled=False`` passes text through."""

    def __init__(self, *, enabled: bool = True, region: str = "US",
                 names: list[str] | None = None):
        self.enabled, self.region = enabled, region.upper()
        self.counts: Counter = Counter()
        self.names: dict[str, str] = {}
        self._names_re = None
        if enabled and names and any(len(n) > 2 for n in names):
            self._set_names(names)

    def _set_names(self, names: list[str]) -> None:
        names = [n for n in names if len(n) > 2]    # "Q", "A", "Me" are labels, not names
        for i, full in enumerate(sorted(set(names)), 1):
            label = f"[person {i}]"
            self.names.setdefault(full, label)
            first = full.split()[0] if full.split() else full
            if len(first) > 2 and first != full:
                self.names.setdefault(first, label)
        words = sorted(self.names, key=len, reverse=True)   # "Anna Berg" before "Anna"
        self._names_re = re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, words)) + r")(?!\w)")

    def _sub(self, kind: str, pattern: re.Pattern, text: str, check=None) -> str:
        def one(m: re.Match) -> str:
            if check is not None and not check(m.group(0)):
                return m.group(0)
            self.counts[kind] += 1
            return PLACEHOLDER[kind]
        return pattern.sub(one, text)

    def _phones(self, text: str) -> str:
        if sum(c.isdigit() for c in text) < 7:   # the matcher is slow; most messages have none
            return text
        out, last = [], 0
        for match in phonenumbers.PhoneNumberMatcher(text, self.region,
                                                      leniency=phonenumbers.Leniency.VALID):
            out += [text[last: match.start], PLACEHOLDER["phone"]]
            last = match.end
            self.counts["phone"] += 1
        return "".join(out) + text[last:]

    def __call__(self, text: str) -> str:
        if not self.enabled:
            return text
        text = self._sub("email", _EMAIL, text)
        text = self._sub("url", _URL, text)
        text = self._sub("iban", _IBAN, text, iban_ok)
        text = self._sub("card", _CARD, text, luhn_ok)
        text = self._phones(text)
        if self._names_re is not None:
            def name(m: re.Match) -> str:
                self.counts["name"] += 1
                return self.names[m.group(0)]
            text = self._names_re.sub(name, text)
        return text

    def summary(self) -> str:
        if not self.enabled:
            return "PII scrub off (--no-scrub)"
        if not self.counts:
            return "PII scrub: nothing found"
        return "PII scrubbed: " + ", ".join(f"{k} {n}" for k, n in sorted(self.counts.items()))
