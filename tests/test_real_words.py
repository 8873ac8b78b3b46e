"""The speller's real-word list (service/replies/real_words.txt) is what service.replies.build_real_words
writes from the installed wordfreq, and loading the speller never imports wordfreq."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from service.replies import build_real_words
from service.replies.spelling import REAL_WORDS, _real_words

REBUILD = "uv run python -m service.replies.build_real_words"


def test_read_real_words_file_built_from_installed_wordfreq() -> None:
    first = REAL_WORDS.read_text(encoding="utf-8").splitlines()[0]
    assert first == build_real_words.header(), f"real_words.txt was built from another wordfreq: run {REBUILD}"


def test_rebuild_real_words_gives_the_shipped_file() -> None:
    assert build_real_words.build() == REAL_WORDS.read_text(encoding="utf-8"), f"stale: run {REBUILD}"


def test_load_real_words_as_wordfreq_top_lists() -> None:
    import wordfreq

    expected = set(wordfreq.top_n_list("en", build_real_words.REAL_EN)) | set(
        wordfreq.top_n_list("es", build_real_words.REAL_ES))
    assert _real_words() == expected
    assert {"closing", "clothing", "dates", "testing", "cierre"} <= _real_words()


def test_load_speller_without_importing_wordfreq() -> None:
    code = ("import sys; from pathlib import Path; from service.replies.spelling import load_speller; "
            "s = load_speller(Path('policies')); assert s.real_words; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in {'wordfreq', 'ftfy', 'langcodes'}))")
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
