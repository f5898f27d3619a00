"""The few words the tool writes itself (footer, preview, dates), in each language an issue may use."""

from __future__ import annotations

import datetime as dt
import re
from typing import Literal, get_args

# The languages an issue may be written in: each has its catalog below (a test keeps the two the same).
Language = Literal["fr", "en"]
LANGUAGES: tuple[str, ...] = get_args(Language)
# What a person or a file may write for a language (compared case-insensitively): its code, and its name in each.
LANGUAGE_WORDS: dict[str, str] = {
    "fr": "fr",
    "français": "fr",
    "francais": "fr",
    "french": "fr",
    "en": "en",
    "anglais": "en",
    "english": "en",
}
# Each language's name in itself: how a choice of language is offered ("Français", "English").
LANGUAGE_NAMES: dict[str, str] = {"fr": "Français", "en": "English"}

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
        # A reader's language: the sign-up form's choice, the preferences page's switch.
        "language_legend": "Langue / Language",
        "language_switch": "Le recevoir en français",
        "language_switched": "C'est noté\u00a0: vous le recevrez désormais en français.",
        # The event section; U+00A0 before « : », as French typography wants.
        "event_when": "Quand\u00a0:",
        "event_where": "Où\u00a0:",
        "event_register": "S'inscrire",
        "event_deadline": "Inscription avant le {date}",
        "event_calendar": "Ajouter à mon agenda",
        "event_link": "{label}\u00a0: {url}",
        "previous_replace": "Repris du numéro précédent : remplacez ce contenu par celui du nouveau numéro.",
        "previous_reused": "Repris du numéro précédent.",
        "previous_date_cleared": "La date du numéro précédent ({date}) a été effacée : indiquez la nouvelle.",
        "previous_date_kept": "Date du numéro précédent ({date}) : remplacez-la par la nouvelle.",
        "people_one": "{count}\u00a0personne",
        "people_many": "{count}\u00a0personnes",
        "approval_prefix": "[À approuver] ",
        "approval_title": "Approuver l'envoi",
        "approval_segment": "{list}, segment «\u00a0{segment}\u00a0»",
        "approval_asks": "{who} demande d'envoyer ce numéro à la liste «\u00a0{list}\u00a0»\u00a0: {count}, {when}.",
        "approval_now": "dès qu'il sera approuvé",
        "approval_at": "le {at}",
        "approval_moment": "{day} à {time}",
        "approval_expires": "Cette demande expire le {at}.",
        "approval_required": "Il faut {required} approbations\u00a0; un refus suffit à l'arrêter.",
        "approval_approve": "Approuver et envoyer",
        "approval_decline": "Refuser",
        "approval_banner_note": "Ce bandeau ne fait pas partie du courriel\u00a0: les abonnés reçoivent ce qui suit.",
        "approval_terminal": "Au terminal, dans le dossier du bulletin\u00a0: « newsletter approve {id} » ou "
        "« newsletter decline {id} --reason … ».",
        "approval_no_server": "Ce bulletin n'a pas de serveur pour ces boutons\u00a0: décidez au terminal.",
        "approval_subject": "Objet\u00a0: {subject}",
        "approval_subject_in": "Objet ({name})\u00a0: {subject}",
        "approval_versions": "Il part en {count} versions, chacune dans son courriel à approuver (celui-ci\u00a0: "
        "{this})\u00a0:",
        "approval_version": "{name}\u00a0: {count}, objet «\u00a0{subject}\u00a0»",
        "approval_sender": "De\u00a0: {sender}",
        "approval_comment": "Pourquoi\u00a0? (facultatif\u00a0: la personne qui a demandé le verra)",
        "approval_approved": "C'est approuvé\u00a0: le numéro part à {list}.",
        "approval_scheduled": "C'est approuvé\u00a0: le numéro partira à {list} le {at}.",
        "approval_counted": "Votre approbation est comptée\u00a0; il en faut d'autres avant l'envoi.",
        "approval_declined": "C'est refusé\u00a0: rien ne partira. {who} verra votre commentaire.",
        "approval_closed": "Cette demande n'est plus ouverte\u00a0: l'envoi est {status}.",
        "approval_used": "Vous avez déjà répondu à cette demande.",
        "approval_changed": "Le numéro a changé depuis cette demande\u00a0: elle est annulée, et rien ne partira "
        "sans une nouvelle demande.",
        "approval_invalid": "Ce lien d'approbation n'est pas valide ou il a expiré.",
        # serve's approval page (web/approvals.py)
        "approval_expired": "Cette demande a expiré\u00a0: rien ne partira sans une nouvelle demande.",
        "approval_so_far": "Déjà approuvé par\u00a0: {names}.",
        "approval_status_awaiting-approval": "en attente d'approbation",
        "approval_status_scheduled": "programmé",
        "approval_status_running": "en cours",
        "approval_status_paused": "en pause",
        "approval_status_finished": "terminé",
        "approval_status_cancelled": "annulé",
        "approval_status_expired": "expiré",
        "approval_status_declined": "refusé",
        # A bilingual issue: the link at the top of the other version to this one, written in this language, and
        # this version's name in preview's language switch.
        "other_version": "Lire en français",
        "version_name": "Français",
        "skeleton_translation_date": "Pas de date ici : celle d'issue.yaml vaut pour les deux versions.",
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
        # A reader's language: the sign-up form's choice, the preferences page's switch.
        "language_legend": "Langue / Language",
        "language_switch": "Receive it in English",
        "language_switched": "Done: you will receive it in English from now on.",
        "event_when": "When:",
        "event_where": "Where:",
        "event_register": "Register",
        "event_deadline": "Register by {date}",
        "event_calendar": "Add to calendar",
        "event_link": "{label}: {url}",
        "previous_replace": "From the previous issue: replace this content with the new issue's.",
        "previous_reused": "From the previous issue.",
        "previous_date_cleared": "The previous issue's date ({date}) was cleared: give the new one.",
        "previous_date_kept": "The previous issue's date ({date}): replace it with the new one.",
        "people_one": "{count} person",
        "people_many": "{count} people",
        "approval_prefix": "[To approve] ",
        "approval_title": "Approve the send",
        "approval_segment": "{list}, segment “{segment}”",
        "approval_asks": "{who} asks to send this issue to the list “{list}”: {count}, {when}.",
        "approval_now": "as soon as it is approved",
        "approval_at": "on {at}",
        "approval_moment": "{day} at {time}",
        "approval_expires": "This request expires on {at}.",
        "approval_required": "{required} approvals are needed; one decline stops it.",
        "approval_approve": "Approve and send",
        "approval_decline": "Decline",
        "approval_banner_note": "This banner is not part of the email: members get what follows.",
        "approval_terminal": "On a terminal, in the newsletter's folder: `newsletter approve {id}` or "
        "`newsletter decline {id} --reason …`.",
        "approval_no_server": "This newsletter has no server for these buttons: decide on a terminal.",
        "approval_subject": "Subject: {subject}",
        "approval_subject_in": "Subject ({name}): {subject}",
        "approval_versions": "It goes out in {count} versions, each in an email of its own to approve (this one: "
        "{this}):",
        "approval_version": "{name}: {count}, subject “{subject}”",
        "approval_sender": "From: {sender}",
        "approval_comment": "Why? (optional: whoever asked will see it)",
        "approval_approved": "Approved: the issue is going to {list}.",
        "approval_scheduled": "Approved: the issue will go to {list} on {at}.",
        "approval_counted": "Your approval is counted; more are needed before it goes.",
        "approval_declined": "Declined: nothing will be sent. {who} will see your comment.",
        "approval_closed": "This request is no longer open: the send is {status}.",
        "approval_used": "You have already answered this request.",
        "approval_changed": "The issue changed since this request: it is void, and nothing will go without a new "
        "request.",
        "approval_invalid": "This approval link is not valid, or it has expired.",
        # serve's approval page (web/approvals.py)
        "approval_expired": "This request has expired: nothing will go without a new request.",
        "approval_so_far": "Approved so far by: {names}.",
        "approval_status_awaiting-approval": "awaiting approval",
        "approval_status_scheduled": "scheduled",
        "approval_status_running": "under way",
        "approval_status_paused": "paused",
        "approval_status_finished": "finished",
        "approval_status_cancelled": "cancelled",
        "approval_status_expired": "expired",
        "approval_status_declined": "declined",
        "other_version": "Read in English",
        "version_name": "English",
        "skeleton_translation_date": "No date here: issue.yaml's is both versions' date.",
    },
}

NBSP = "\u00a0"  # no-break space: French puts one between a number and its unit, a day and its month, before « : »

_WEEKDAYS = {
    "fr": ["lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche"],
    "en": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
}

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


def parse_language(text: str) -> str:
    """A language as written ("fr", "English", "  Français "): its code; ValueError naming what is accepted."""
    word = text.strip().casefold()
    # A language tag with its region (fr-CA, en_US: BCP 47, or as Mailchimp and locales write it) is its language.
    found = LANGUAGE_WORDS.get(word) or LANGUAGE_WORDS.get(re.split(r"[-_]", word, maxsplit=1)[0])
    if found is None:
        raise ValueError(f"unknown language '{text.strip()}'; write fr or en (français, anglais, French, English)")
    return found


def translate(lang: str, key: str, **values: str) -> str:
    """Return the catalog's text for key in lang, with {values} filled in."""
    return CATALOG[lang][key].format(**values)


def people(lang: str, count: int) -> str:
    """How many people, as a reader of lang writes it: '1 personne', '3 personnes' ('0 personne' in French)."""
    return translate(
        lang, "people_one" if count < 2 and (count == 1 or lang == "fr") else "people_many", count=str(count)
    )


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


def format_day(date: dt.date, lang: str, *, weekday: bool = False, year: bool = True) -> str:
    """A day as a sentence carries it, never broken between day and month: '(mercredi )12 février 2025',
    '(Wednesday, )February 12, 2025'. French writes the first of the month '1er'."""
    month = _MONTHS[lang][date.month - 1]
    name = _WEEKDAYS[lang][date.weekday()]
    if lang == "fr":
        day = "1er" if date.day == 1 else str(date.day)
        text = f"{day}{NBSP}{month}" + (f" {date.year}" if year else "")
        return f"{name} {text}" if weekday else text
    text = f"{month}{NBSP}{date.day}" + (f", {date.year}" if year else "")
    return f"{name}, {text}" if weekday else text


def format_time(moment: dt.time | dt.datetime, lang: str) -> str:
    """A time of day: '9 h', '9 h 30', '17 h 05' (24-hour, as Quebec writes it) or '9:00 a.m.', '12:00 p.m.'."""
    hour, minute = moment.hour, moment.minute
    if lang == "fr":
        return f"{hour}{NBSP}h" + (f"{NBSP}{minute:02d}" if minute else "")
    suffix = "a.m." if hour < 12 else "p.m."
    return f"{(hour % 12) or 12}:{minute:02d}{NBSP}{suffix}"


def format_event_when(start: dt.date, end: dt.date | None, lang: str) -> str:
    """When an event takes place, as a sentence of lang writes it; start and end are both dates (a day-long event,
    end the last day) or both date-times (their time of day as written, wherever the event is).

    French: 'le mercredi 12 février 2025, de 9 h à 12 h', 'du mercredi 12 au vendredi 14 février 2025'.
    English: 'Wednesday, February 12, 2025, 9:00 a.m. to 12:00 p.m.', 'Wednesday, February 12 to Friday,
    February 14, 2025'. An event across two days says both days, with their times.
    """
    fr = lang == "fr"
    first = start.date() if isinstance(start, dt.datetime) else start
    last = end.date() if isinstance(end, dt.datetime) else end
    if not isinstance(start, dt.datetime):
        if last is None or last == first:
            day = format_day(first, lang, weekday=True)
            return f"le {day}" if fr else day
        same_year = first.year == last.year
        if same_year and first.month == last.month and fr:  # 'du mercredi 12 au vendredi 14 février 2025'
            opening = f"{_WEEKDAYS[lang][first.weekday()]} {'1er' if first.day == 1 else first.day}"
        else:
            opening = format_day(first, lang, weekday=True, year=not same_year)
        closing = format_day(last, lang, weekday=True)
        return f"du {opening} au {closing}" if fr else f"{opening} to {closing}"
    day = format_day(first, lang, weekday=True)
    if end is None:
        return f"le {day}, à {format_time(start, lang)}" if fr else f"{day}, {format_time(start, lang)}"
    if not isinstance(end, dt.datetime):
        raise TypeError(f"a timed event ends at a date and time, not on the day {end}")
    if last == first:
        if fr:
            return f"le {day}, de {format_time(start, lang)} à {format_time(end, lang)}"
        return f"{day}, {format_time(start, lang)} to {format_time(end, lang)}"
    other = format_day(end.date(), lang, weekday=True)
    if fr:
        return f"du {day} à {format_time(start, lang)} au {other} à {format_time(end, lang)}"
    return f"{day}, {format_time(start, lang)} to {other}, {format_time(end, lang)}"
