"""The reply language detector's truth table: English, Spanish, Spanglish, undecidable, names and places."""

from __future__ import annotations

import timeit

import pytest

from service.replies.language import detect

ROWS: list[tuple[str, str | None]] = [
    # Spanish
    ("Quiero comprar una casa", "es"),
    ("hola, necesito refinanciar mi casa", "es"),
    ("Gracias", "es"),
    ("gracias!!", "es"),
    ("Hola", "es"),
    ("BAJA", "es"),
    ("baja por favor", "es"),
    ("dejen de escribirme", "es"),
    ("No me escriban mas", "es"),
    ("no me interesa", "es"),
    ("Compra", "es"),
    ("Refinanciar", "es"),
    ("en unos 3 meses", "es"),
    ("la proxima semana", "es"),
    ("mañana por la tarde", "es"),
    ("¿Cuál es la tasa?", "es"),
    ("cual es la tasa de interes?", "es"),
    ("estoy buscando un préstamo para mi primera casa", "es"),
    ("ya aplique con otro banco", "es"),
    ("no, todavía no", "es"),
    ("llámame después de las 5", "es"),
    ("me pueden llamar despues de las 5?", "es"),
    ("numero equivocado", "es"),
    ("Buenas tardes, quisiera informacion", "es"),
    ("para marzo", "es"),
    ("Vivo en Los Angeles y quiero comprar", "es"),
    ("Soy José, quiero refinanciar", "es"),
    ("cuando puedo hablar con alguien?", "es"),
    ("sí, gracias", "es"),
    ("¡Sí!", "es"),
    # Spanglish: Spanish dominates
    ("stop por favor, no mas mensajes", "es"),
    ("ok gracias", "es"),
    ("purchase, en 2 meses", "es"),
    ("Hi, quiero comprar una casa este mes", "es"),
    ("yes, ya tengo un prestamista", "es"),
    # English
    ("I want to buy a house", "en"),
    ("We are looking to refinance", "en"),
    ("Thank you", "en"),
    ("please call me tomorrow after 5", "en"),
    ("Not interested, thanks", "en"),
    ("wrong number", "en"),
    ("we already applied with another lender", "en"),
    ("in 1-3 months", "en"),
    ("Hi there", "en"),
    ("Can you call me back?", "en"),
    # English with Spanish names and places: never flipped to Spanish
    ("Hi this is Jose, I want to buy a house in San Diego", "en"),
    ("We're moving to Los Angeles next month", "en"),
    ("I live in El Paso and want to refinance", "en"),
    ("This is José Peña, please call me", "en"),
    ("Looking at homes in Santa Fe and Las Vegas", "en"),
    ("Maria here, we want to purchase", "en"),
    ("Hola, I want to refinance my house", "en"),
    ("I live in LA, call me", "en"),
    # Undecidable
    ("ok", None),
    ("OK", None),
    ("yes", None),
    ("Yes", None),
    ("no", None),
    ("si", None),
    ("STOP", None),
    ("stop", None),
    ("123", None),
    ("6", None),
    ("👍", None),
    ("🏠🏠", None),
    ("", None),
    ("   ", None),
    ("Jose", None),
    ("San Diego", None),
    ("Los Angeles", None),
    ("PURCHASE", None),
    ("refinance", None),
    ("la", None),
    ("thanks", None),
    ("y", None),
    ("k", None),
]


@pytest.mark.parametrize(("text", "expected"), ROWS)
def test_detect_language_of_reply(text: str, expected: str | None) -> None:
    assert detect(text) == expected


def test_detect_language_takes_microseconds() -> None:
    text = "Hi this is Jose, I want to buy a house in San Diego sometime next month, thanks"
    per_call = min(timeit.repeat(lambda: detect(text), number=1000, repeat=3)) / 1000
    assert per_call < 100e-6, per_call
