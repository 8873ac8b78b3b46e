"""Build service/replies/real_words.txt, the words the speller never edits into a listed word.

    uv run python -m service.replies.build_real_words

The list is the most frequent English and Spanish words of the installed wordfreq (top 40,000 and 25,000),
written once instead of loading wordfreq's frequency tables in every process (61 MiB of RSS for a 60k-word
set). tests/test_real_words.py fails when the file is not what this writes, or when it was built from another
wordfreq than the one installed.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

REAL_EN, REAL_ES = 40_000, 25_000
TARGET = Path(__file__).with_name("real_words.txt")


def header() -> str:
    return f"# wordfreq {version('wordfreq')}: top {REAL_EN} en, top {REAL_ES} es"


def build() -> str:
    """The file's text: a header naming its source, then one word per line, sorted."""
    import wordfreq  # lazy: its frequency tables (61 MiB) load only when the list is rebuilt

    words = set(wordfreq.top_n_list("en", REAL_EN)) | set(wordfreq.top_n_list("es", REAL_ES))
    return "\n".join([header(), *sorted(words)]) + "\n"


def main() -> None:
    TARGET.write_text(build(), encoding="utf-8")
    print(f"wrote {TARGET}")


if __name__ == "__main__":
    main()
