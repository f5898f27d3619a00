"""The few words the tool writes itself (footer, preview, dates), in each language an issue may use."""

from __future__ import annotations

import datetime as dt

CATALOG: dict[str, dict[str, str]] = {
    "fr": {
        "unsubscribe": "Se désabonner",
        "view_online": "Voir ce courriel dans votre navigateur",
        "reason": "Vous recevez ce bulletin parce que vous êtes abonné·e à la liste de diffusion de {publisher}.",
        "label_url": "{label} : {url}",
        "unsubscribe_subject": "Désabonnement",
        "page_title": "Désabonnement",
        "confirm_question": "Ne plus recevoir {list} à l'adresse {email} ?",
        "confirm_button": "Me désabonner",
        "done": "C'est fait : {email} ne recevra plus {list}.",
        "undo_question": "Vous vous êtes trompé·e ?",
        "undo_button": "Me réabonner",
        "resubscribed": "{email} est de nouveau abonné·e à {list}.",
        "already": "{email} n'est plus abonné·e à {list}.",
        "invalid": "Ce lien de désabonnement n'est pas valide. Écrivez-nous pour ne plus recevoir nos courriels.",
        "archive_title": "Archives",
    },
    "en": {
        "unsubscribe": "Unsubscribe",
        "view_online": "View this email in your browser",
        "reason": "You are receiving this newsletter because you subscribed to {publisher}'s mailing list.",
        "label_url": "{label}: {url}",
        "unsubscribe_subject": "Unsubscribe",
        "page_title": "Unsubscribe",
        "confirm_question": "Stop receiving {list} at {email}?",
        "confirm_button": "Unsubscribe me",
        "done": "Done: {email} will no longer receive {list}.",
        "undo_question": "Was that a mistake?",
        "undo_button": "Subscribe me again",
        "resubscribed": "{email} is subscribed to {list} again.",
        "already": "{email} is no longer subscribed to {list}.",
        "invalid": "This unsubscribe link is not valid. Write to us to stop receiving our emails.",
        "archive_title": "Archive",
    },
}

LANGUAGES = tuple(CATALOG)

_MONTHS = {
    "fr": [
        "janvier",
        "février",
        "mars",
        "avril",
        "mai",
        "juin",
        "juillet",
        "août",
        "septembre",
        "octobre",
        "novembre",
        "décembre",
    ],
    "en": [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ],
}


def translate(lang: str, key: str, **values: str) -> str:
    """Return the catalog's text for key in lang, with {values} filled in."""
    return CATALOG[lang][key].format(**values)


def format_date(date: dt.date, lang: str, style: str = "day") -> str:
    """Format a date the way a reader of lang writes it: '19 novembre 2024' or 'November 19, 2024'.

    style="month" gives the month and year only ('novembre 2024').
    """
    month = _MONTHS[lang][date.month - 1]
    if style == "month":
        return f"{month} {date.year}"
    if lang == "fr":
        day = "1er" if date.day == 1 else str(date.day)
        return f"{day} {month} {date.year}"
    return f"{month} {date.day}, {date.year}"
