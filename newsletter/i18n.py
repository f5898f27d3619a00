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
        "signup_title": "Abonnement : {list}",
        "signup_intro": "Recevez {list} par courriel.",
        "email_label": "Adresse courriel",
        "name_label": "Nom (facultatif)",
        "consent_default": "J'accepte de recevoir {list} de {publisher} par courriel. Je peux me désabonner en "
        "tout temps par le lien au bas de chaque envoi.",
        "signup_button": "M'abonner",
        "honeypot_label": "Ne remplissez pas ce champ",
        "signup_sent": "Merci ! Si cette adresse peut recevoir {list}, un courriel de confirmation vient de lui être "
        "envoyé : ouvrez le lien qu'il contient pour confirmer votre abonnement.",
        "signup_bad_address": "Cette adresse courriel ne semble pas valide. Vérifiez-la et réessayez.",
        "confirm_title": "Confirmer l'abonnement",
        "confirm_ask": "Confirmer l'abonnement de {email} à {list} ?",
        "confirm_action": "Confirmer",
        "confirmed": "C'est confirmé : {email} recevra {list}.",
        "confirm_invalid": "Ce lien de confirmation n'est pas valide ou il a expiré. Vous pouvez vous abonner de "
        "nouveau.",
        "confirm_subject": "Confirmez votre abonnement à {list}",
        "confirm_email_intro": "Bonjour, quelqu'un (vous, sans doute) a demandé à recevoir {list} à cette adresse.",
        "confirm_email_action": "Confirmer mon abonnement",
        "confirm_email_ignore": "Si ce n'est pas vous, ignorez ce courriel : vous ne recevrez rien d'autre.",
        "confirm_email_expiry": "Ce lien est valable 7 jours.",
        "other_lists": "Vos autres listes",
        "leave": "Me désabonner",
        "leave_all": "Me désabonner de tout",
        "left_all": "C'est fait : {email} ne recevra plus rien de {publisher}.",
        "state_subscribed": "abonné·e",
        "state_unsubscribed": "désabonné·e",
        "state_pending": "en attente de confirmation",
        "state_bounced": "adresse en erreur",
        "state_complained": "signalé comme indésirable",
        "previous_replace": "Repris du numéro précédent : remplacez ce contenu par celui du nouveau numéro.",
        "previous_reused": "Repris du numéro précédent.",
        "previous_date_cleared": "La date du numéro précédent ({date}) a été effacée : indiquez la nouvelle.",
        "previous_date_kept": "Date du numéro précédent ({date}) : remplacez-la par la nouvelle.",
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
        "signup_title": "Subscribe: {list}",
        "signup_intro": "Get {list} by email.",
        "email_label": "Email address",
        "name_label": "Name (optional)",
        "consent_default": "I agree to receive {list} from {publisher} by email. I can unsubscribe at any time "
        "with the link at the bottom of every email.",
        "signup_button": "Subscribe",
        "honeypot_label": "Leave this field empty",
        "signup_sent": "Thank you! If this address can receive {list}, a confirmation email is on its way: open "
        "its link to confirm your subscription.",
        "signup_bad_address": "This email address does not look valid. Check it and try again.",
        "confirm_title": "Confirm your subscription",
        "confirm_ask": "Confirm the subscription of {email} to {list}?",
        "confirm_action": "Confirm",
        "confirmed": "Confirmed: {email} will receive {list}.",
        "confirm_invalid": "This confirmation link is not valid or it has expired. You can subscribe again.",
        "confirm_subject": "Confirm your subscription to {list}",
        "confirm_email_intro": "Hello, someone (probably you) asked to receive {list} at this address.",
        "confirm_email_action": "Confirm my subscription",
        "confirm_email_ignore": "If it wasn't you, ignore this email: you will receive nothing else.",
        "confirm_email_expiry": "This link is valid for 7 days.",
        "other_lists": "Your other lists",
        "leave": "Unsubscribe",
        "leave_all": "Unsubscribe from everything",
        "left_all": "Done: {email} will receive nothing more from {publisher}.",
        "state_subscribed": "subscribed",
        "state_unsubscribed": "unsubscribed",
        "state_pending": "waiting for confirmation",
        "state_bounced": "address bounced",
        "state_complained": "reported as spam",
        "previous_replace": "From the previous issue: replace this content with the new issue's.",
        "previous_reused": "From the previous issue.",
        "previous_date_cleared": "The previous issue's date ({date}) was cleared: give the new one.",
        "previous_date_kept": "The previous issue's date ({date}): replace it with the new one.",
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
