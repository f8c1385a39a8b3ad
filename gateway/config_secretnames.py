"""Whether a config value in a `*_env` setting is the name of an environment variable or a
secret pasted where its name goes (`not_a_secret`: config_types.SecretEnv's check).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["not_a_secret"]


#: a variable named as a reference, `${NAME}` or `$NAME`: a name, stated to be one
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]{0,127})\}|\$([A-Za-z_][A-Za-z0-9_]{0,127})")
#: the parts of a CamelCase identifier (`MyCompanyProdKillgateJwtSecret_V2`): capitalised
#: words, one lower-case word (camelCase's first), short acronyms, digit runs, underscores
_CAMEL_PART = re.compile(
    r"[A-Z][a-z]{1,11}|[a-z]{2,12}|[A-Z]{1,4}(?=[A-Z][a-z]|[0-9]|_|$)|[0-9]{1,4}|_")
_CLUSTER = re.compile(r"[b-df-hj-np-tv-xz]{4}", re.IGNORECASE)  # no word has 4 consonants
_VOWEL = re.compile(r"[aeiouy]", re.IGNORECASE)


def _camel_words(name: str) -> bool:
    """Whether `name` reads as a CamelCase identifier of words: at least four capitalised
    words of four letters on average, most with a vowel and none with four consonants in a
    row, a lower-case word only first, at most two acronyms or digit runs. Random keys
    rarely do: none of 250,000 each of `openssl rand -base64 32`, `-hex 16`, `-hex 32`,
    token_urlsafe(24) and (32), nor of 150,000 of 32 random letters and digits (measured);
    about 1 in 5,500 keys of 32 random letters only."""
    if not name[:1].isalpha():
        return False
    parts: list[str] = []
    pos = 0
    while pos < len(name):
        m = _CAMEL_PART.match(name, pos)
        if m is None:
            return False
        parts.append(m.group())
        pos = m.end()
    words = [p for p in parts if p.isalpha() and len(p) >= 2 and p[1:].islower()]
    others = [p for p in parts if p != "_" and p not in words]
    lowers = [p for p in words if p.islower()]
    return (len(words) >= 4 and sum(map(len, words)) >= 4 * len(words) and len(others) <= 2
            and (not lowers or lowers == words[:1]) and parts[0] == words[0]
            and not any(_CLUSTER.search(w) for w in words)
            and 4 * sum(bool(_VOWEL.search(w)) for w in words) >= 3 * len(words))


def not_a_secret(name: Any) -> Any:
    """The name of an environment variable holding a key, unless it looks like the key
    itself: a secret pasted where its variable's name goes (`hs256_secret_env: <the
    secret>`) was quoted whole by `killgate check`, `serve`'s log and `/v1/config` ("set the
    environment variable <secret>"). A key is at least 32 characters; a variable's name that
    long has an underscore, and is not upper case, lower case and digits at once with fewer
    than three (`MyApp_Prod_Killgate_Secret_2024_Q3` is a name; base64url rarely has three);
    nor is one of words in one case joined by '-' or '.' (a Kubernetes Secret's key made a
    variable by envFrom: `killgate-admin-jwt-signing-secret`) unless all hex (a UUID); nor
    a CamelCase identifier of words (`MyCompanyProdKillgateJwtSecret_V2`: `_camel_words`).
    Any name written as a reference, `${NAME}` or `$NAME`, is a name, whatever it looks
    like: the value is NAME (the way out the refusal gives for a name taken for a key)."""
    if not isinstance(name, str):
        return name  # (the schema says what it must be)
    ref = _ENV_REF.fullmatch(name)
    if ref is not None:
        return ref.group(1) or ref.group(2)
    cased = any(c.isupper() for c in name) and any(c.islower() for c in name)
    mixed = cased and any(c.isdigit() for c in name)
    worded = (not cased and ("-" in name or "." in name)
              and any(c.isalpha() and c.lower() > "f" for c in name))
    if len(name) >= 32 and not worded and ("_" not in name or (
            mixed and name.count("_") < 3)) and not _camel_words(name):
        raise ValueError("looks like a secret, not the name of an environment variable (not "
                         "shown here): name the variable that holds the secret, such as "
                         "KILLGATE_JWT_SECRET, and keep the secret itself out of the config; "
                         "if it is a variable's name, write it as a reference: ${NAME}")
    return name
