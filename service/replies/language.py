"""Which language a reply is written in: Spanish, English, or undecidable. Deterministic, a few microseconds.

`detect(text)` counts signals, with no model and no dictionary file:

- Spanish: common SMS vocabulary of a mortgage conversation ("quiero", "comprar", "casa", "gracias", "tasa",
  "préstamo", "mañana", "dejen", "baja"...) weighs 2, enough alone; Spanish function words ("el", "los",
  "para", "por", "que"...) weigh 1 and need company; ¿ or ¡ weighs 2; any other word with á é í ó ú ñ weighs 1
  (a common Spanish name such as "José" or "Peña" does not count); "no me" weighs 1.
- English: function and common words ("I", "want", "the", "to", "buy", "house"...) weigh 1 each.
- Neither: words both languages use in a text ("no", "me", "a", "si", "ok", "yes", "stop", names, figures,
  emoji) and place names ("Los Angeles", "San Diego", "El Paso": a capitalised Spanish article or saint
  followed by a capitalised word) are removed before counting, so they never flip an English text.

Spanish when its score is at least 2 and beats English; English when its score is at least 2 and beats
Spanish; otherwise None (a bare "ok", "yes", "si", "STOP", a number, a single English word such as
"PURCHASE": the lead's language stays as it was). BAJA, the Spanish carrier opt-out keyword, is Spanish.
"""

from __future__ import annotations

import re
from typing import Literal

Language = Literal["es", "en"]

_WORD = re.compile(r"[a-záéíóúüñ]+", re.IGNORECASE)
# "Los Angeles", "San Diego", "Santa Fe", "El Paso", "La Jolla", "Las Vegas": case-sensitive on purpose.
_PLACE = re.compile(r"\b(?:Los|Las|San|Santa|Santo|El|La|Del|De)\s+[A-Z][\w'-]*")
_ACCENTS = str.maketrans("áéíóúüñ", "aeiouun")
_DIACRITIC = re.compile(r"[áéíóúñ]")

_ES_STRONG = frozenset("""
    quiero queremos quisiera quisieramos necesito necesitamos necesita tengo tenemos tiene tienen puedo puede
    pueden podemos podria comprar compra compro compramos comprando vender vendo casa casas vivienda hogar
    terreno tasa tasas interes prestamo prestamos credito hipoteca refinanciar refinanciamiento refinanciacion
    refinanciando gracias hola favor porfa buenas buenos dias tardes noches cuando cuanto cuanta donde
    manana semana semanas mes meses ano anos dejen deje dejar baja mensajes mensaje escribir escribirme
    escriban escriba escribe mandar manden envien llamar llamen llame llamada llamame llameme hablar hablo
    habla hablamos espanol ingles ayuda ayudar solicitud solicite aplique prestamista banco otro otra ahora
    despues antes pronto todavia temprano hoy ayer lunes martes miercoles jueves viernes sabado domingo
    enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre diciembre numero
    equivocado interesa interesado interesada nada nunca tambien aqui estoy estamos esta estan soy somos
    usted ustedes vivo vivimos trabajo dinero pago pagos mensual enganche cierre primera primer bueno vale
    claro perfecto listo todo todos muchas muchos pregunta preguntas favor mas menos sin seguro porque pero
    adios saludos senor senora
""".split())
_ES_WEAK = frozenset("""
    el la los las lo le les de del para por con una uno unos unas que como es en mi mis tu su sus nos se muy
    ya al este esto estos eso hay son
""".split())
_EN = frozenset("""
    i im ive id ill you your youre we were our us they their he she it its is are was be been am the an and
    to of for with from this that these those there here what when where how why who which can could would
    will should do does did dont didnt not have has had want wanted need looking look buy buying bought sell
    home house houses place please call calling called text texting my just about after before in on at out
    up if so but or also any some more get got going go know think hi hello hey thank rate rates loan loans
    purchase purchasing refinance refinancing refi month months week weeks year years tomorrow today
    tonight morning afternoon evening time already applied lender anyone someone number wrong interested
    talk speak back soon now later next again still yet all only
""".split())
# Common Spanish given names and surnames: their accents are no sign of the language a text is written in.
_NAMES = frozenset("""
    jose maria garcia pena munoz ramirez hernandez lopez martinez gonzalez rodriguez perez sanchez gomez
    diaz gutierrez jimenez fernandez alvarez dominguez nunez ibanez ruben raul angel oscar andres ines
    sofia lucia monica veronica ramon joaquin julian adrian ivan cesar hector
""".split())


def scores(text: str) -> tuple[int, int]:
    """(Spanish score, English score) of `text`, as `detect` weighs them."""
    text = _PLACE.sub(" ", text)
    spanish = 2 if ("¿" in text or "¡" in text) else 0
    english = 0
    previous = ""
    for raw in _WORD.findall(text):
        word = raw.lower()
        folded = word.translate(_ACCENTS)
        if folded in _NAMES:
            previous = ""
            continue
        if folded in _ES_STRONG:
            spanish += 2
        elif folded in _ES_WEAK:
            spanish += 1
        elif folded in _EN:
            english += 1
        elif _DIACRITIC.search(word):
            spanish += 1
        if previous == "no" and folded == "me":
            spanish += 1
        previous = folded
    return spanish, english


def detect(text: str) -> Language | None:
    """"es", "en", or None when the text does not say (see the module docstring)."""
    spanish, english = scores(text)
    if spanish >= 2 and spanish > english:
        return "es"
    if english >= 2 and english > spanish:
        return "en"
    return None
