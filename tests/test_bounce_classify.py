"""newsletter.bounces.classify on the corpus of tests/fixtures/bounces/ (real returned mail, labelled in
expected.toml by reading each message) and on broken input: every file classified as its label says, the
addresses it names found, no wrong hard bounce anywhere, and nothing but a Report or BounceParseError out of any
bytes, however mangled."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsletter.bounces.classify import BounceParseError, Report, classify

CORPUS = Path(__file__).parent / "fixtures" / "bounces"
LABELS: dict[str, dict] = tomllib.loads((CORPUS / "expected.toml").read_text(encoding="utf-8"))

# Where the classifier does not find an address the label names, and why. The test fails when one is found after
# all, so that this list says what the classifier does.
ADDRESS_NOT_FOUND = {
    "flufl/aol_01.txt": "AOL names a bare screen name; no domain is guessed",
    "flufl/microsoft_03.txt": "the report's own X-Original-To names the failed address: the report's own addresses "
    "are never taken as failed ones",
    "flufl/yahoo_12.txt": "the address is only in the quoted original's To line",
    "flufl/yale_01.txt": "Yale names a bare user name",
    "sisimai/rhost-franceptt-12.eml": "anonymised to the same address as the report's own Delivered-To",
}
# Addresses taken that the label does not name.
EXTRA_ADDRESSES = {"flufl/llnl_01.txt": "LLNL's locator lists other people's addresses and a pattern"}
# Where the classifier says soft and the label hard: the rules err towards soft, never the other way.
SOFTER_THAN_LABEL = {
    "flufl/simple_30.txt": "553 5.3.0 'No such user here': a 5.3.x code is soft, whatever its words",
    "flufl/simple_33.txt": "553 5.3.0 'No such user here': the same",
    "flufl/smtp32_04.txt": "553 5.3.0 'Addressee unknown': the same",
    "flufl/smtp32_06.txt": "553 5.3.0 'Addressee unknown': the same",
    "flufl/llnl_01.txt": "'did not exactly match an LLNL email address' is no phrase the rules know",
}


def classify_file(name: str) -> Report:
    return classify((CORPUS / name).read_bytes())


def _names(failure) -> set[str]:
    return {a.lower() for a in (failure.address, failure.original) if a}


def test_every_corpus_file_is_labelled():
    files = {str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*") if p.suffix in (".txt", ".eml")}
    assert files == set(LABELS)
    assert len(files) >= 140


@pytest.mark.parametrize("name", sorted(LABELS))
def test_corpus_file(name):
    label = LABELS[name]
    report = classify_file(name)
    assert report.kind == label["kind"], report.why
    assert report.why
    for failure in report.failures:
        assert "\n" not in failure.diagnostic and len(failure.diagnostic) <= 300
        assert failure.severity in ("hard", "soft", "deferred", "delivered")
    if label["kind"] != "bounce":
        if "complainant" in label:
            assert report.complainant == (label["complainant"] or None)
        assert all(f.severity != "hard" for f in report.failures)
        return
    expected = {f["address"].lower(): f for f in label["failures"]}
    missing, softer = [], []
    for address, wanted in expected.items():
        failure = next((f for f in report.failures if address in _names(f)), None)
        if failure is None:
            missing.append(address)
            continue
        if failure.severity != wanted["severity"]:
            assert (failure.severity, wanted["severity"]) == ("soft", "hard"), (address, failure)
            softer.append(address)
        if wanted.get("sender_problem"):
            assert failure.sender_problem, failure
    assert bool(missing) == (name in ADDRESS_NOT_FOUND), missing
    assert bool(softer) == (name in SOFTER_THAN_LABEL), softer
    extra = [f.address for f in report.failures if f.address and not _names(f) & set(expected)]
    assert bool(extra) == (name in EXTRA_ADDRESSES), extra
    if label.get("sender_problem"):
        assert any(f.sender_problem for f in report.failures)


def test_no_wrong_hard_bounce_in_the_corpus():
    """The worst outcome: a subscriber removed who should not be. Zero, whatever else the classifier misses."""
    wrong = []
    for name, label in LABELS.items():
        hard = {f["address"].lower() for f in label["failures"] if f["severity"] == "hard"}
        for failure in classify_file(name).failures:
            if failure.severity == "hard" and not (label["kind"] == "bounce" and _names(failure) & hard):
                wrong.append((name, failure.address, failure.status, failure.diagnostic))
    assert wrong == []


def test_dsn_with_several_recipients():
    report = classify_file("rfc/rfc3464-multi.eml")
    assert [(f.address, f.action, f.status, f.severity) for f in report.failures] == [
        ("arathib@vnet.ibm.com", "failed", "5.0.0", "hard"),
        ("johnh@hpnjld.njd.hp.com", "delayed", "4.0.0", "deferred"),
        ("wsnell@sdcc13.ucsd.edu", "failed", "5.0.0", "hard"),
    ]
    assert report.failures[0].original == "arathib@vnet.ibm.com"
    assert report.failures[0].diagnostic == "550 'arathib@vnet.IBM.COM' is not a registered gateway user"
    assert report.sender == "Mail Delivery Subsystem <MAILER-DAEMON@CS.UTK.EDU>"
    assert report.subject == "Returned mail: User unknown"
    assert report.date == "Fri, 8 Jul 1994 09:21:47 -0400"

    relayed = classify_file("rfc/rfc2034-relayed.eml")
    assert [(f.address, f.severity, f.sender_problem) for f in relayed.failures] == [
        ("mrose@dbc.mtview.ca.us", "delivered", False),
        ("nosuchuser@dbc.mtview.ca.us", "hard", False),
        ("remoteuser@isi.edu", "soft", True),
    ]

    outlook = classify_file("sisimai/rhost-outlook-04.eml")
    assert [(f.address, f.status, f.severity) for f in outlook.failures] == [
        ("sabineko@example.co.jp", "5.1.1", "hard"),
        ("mikeneko@example.co.jp", "5.2.2", "soft"),
    ]
    assert outlook.original_message_ids == ("<BLU436-SMTP695D62048105F50EF3A1B8BA770@phx.gbl>",)


def test_a_generic_status_is_refined_by_its_diagnostic():
    """A Status of 5.0.0 beside "550 5.7.1 ... unsolicited mail" is a 5.7.1: the sender's problem, soft."""
    report = classify_file("flufl/simple_42.txt")
    [failure] = report.failures
    assert (failure.status, failure.severity, failure.sender_problem) == ("5.7.1", "soft", True)
    assert failure.address is None  # "david...@gmail.com" is no address


def test_microsoft_recipient_not_found_and_its_original():
    report = classify_file("written/exchange-online-5.1.10.eml")
    assert report.kind == "bounce"
    [failure] = report.failures
    assert (failure.address, failure.status, failure.severity) == ("claire.martin@example.com", "5.1.10", "hard")
    assert failure.diagnostic.startswith("550 5.1.10 RESOLVER.ADR.RecipientNotFound")
    assert report.original_message_ids == ("<c12.s9045.3f2a@news.example.org>",)
    assert report.original_list_ids == ("La lettre <lettre.news.example.org>",)
    assert report.envelope_recipients == ("bounces+c2ViM0Q5MTI0NQ@news.example.org",)
    assert report.message_id == "<0f6c2b6e-5c1d-4c55-8a10-2b9d1e3f4a5b@AM6PR04MB5432.eurprd04.prod.outlook.com>"


def test_an_ndr_marked_auto_replied_is_still_a_bounce():
    """Office 365 and Postfix put Auto-Submitted: auto-replied on their reports; a DSN stays a bounce."""
    for name in (
        "sisimai/email-office365-09.eml",
        "sisimai/lhost-postfix-70.eml",
        "written/exchange-online-5.1.10.eml",
    ):
        assert b"Auto-Submitted: auto-replied" in (CORPUS / name).read_bytes()
        assert classify_file(name).kind == "bounce"
    office = classify_file("sisimai/email-office365-09.eml")
    assert office.original_message_ids == (
        "<SLXP216MB0381A2BCD997D05F53CDB50BA9220@SLXP216MB0381.KORP216.PROD.OUTLOOK.COM>",
    )


def test_auto_generated_does_not_make_a_report_an_auto_reply():
    assert b"Auto-Submitted: auto-generated" in (CORPUS / "flufl/dsn_11.txt").read_bytes()
    assert classify_file("flufl/dsn_11.txt").kind == "bounce"
    exchange = classify_file("written/ooo-exchange-automatic-reply.eml")
    assert exchange.kind == "auto-reply" and "Automatic reply" in exchange.why  # its subject decides


def test_quoted_headers_in_the_text_name_the_original():
    assert classify_file("flufl/dsn_02.txt").original_message_ids == (
        "<LNBBLJKPBEHFEDALKOLCMEEDIFAA.tim.one@home.com>",
    )
    assert classify_file("sisimai/rhost-franceptt-12.eml").original_message_ids == ("<xxxx.xxxx@xxxx.net>",)


def test_a_full_mailbox_that_gmail_calls_permanent_is_soft():
    [failure] = classify_file("sisimai/email-google-19.eml").failures
    assert (failure.address, failure.severity) == ("neko-nyaan@google.example.com", "soft")


def test_one_report_of_each_kind():
    complaint = classify_file("rfc/rfc5965-b2.eml")
    assert complaint.kind == "complaint"
    assert complaint.complainant == "user@example.com"
    assert [(f.address, f.action, f.severity) for f in complaint.failures] == [
        ("user@example.com", "complained", "soft")
    ]
    assert complaint.original_message_ids == ("8787KJKJ3K4J3K4J3K4J3.mail@example.net",)
    several = classify_file("sisimai/arf-05.eml")
    assert several.kind == "complaint" and several.complainant == "fake.rcpt@example.com"

    auth_failure = classify_file("sisimai/arf-19.eml")
    assert auth_failure.kind == "unknown" and "auth-failure" in auth_failure.why

    french = classify_file("written/ooo-fr-reponse-automatique.eml")
    assert french.kind == "auto-reply"
    assert french.subject == "Réponse automatique : La lettre de mars"
    assert french.sender == "Françoise Durand <francoise.durand@example.fr>"
    assert french.failures == ()

    assert classify_file("written/challenge-human.eml").kind == "challenge"
    reply = classify_file("written/human-reply.eml")
    assert reply.kind == "unknown" and reply.why == "not a delivery report, complaint, auto-reply or challenge"


def test_bounce_with_a_verp_envelope():
    report = classify_file("sisimai/email-google-02.eml")
    assert report.envelope_recipients == ("this-local-part-does-not-exist-on-google-mail@gmail.com",)
    [failure] = report.failures
    assert (failure.address, failure.status, failure.severity) == (
        "aougoueioaldljgoiuiorghladkgke@example.fr",
        "5.1.1",
        "hard",
    )


# Broken input: a Report ("unknown" at worst) or BounceParseError, never another exception.

DSN = (CORPUS / "rfc/rfc3464-multi.eml").read_bytes()


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(DSN[: len(DSN) // 2], id="truncated-mime"),
        pytest.param(DSN[: DSN.index(b"Action: delayed")], id="truncated-in-the-report"),
        pytest.param(DSN.replace(b'boundary="JAA13167.773673707/CS.UTK.EDU"', b""), id="multipart-without-boundary"),
        pytest.param(DSN.replace(b"charset=us-ascii", b"charset=x-no-such-charset"), id="unknown-charset"),
        pytest.param(
            b"From: MAILER-DAEMON@example.org\nSubject: Undeliverable\nContent-Type: text/plain; charset=UFT-8\n"
            b"Content-Transfer-Encoding: base64\n\n%%%not base64%%%\n",
            id="bad-charset-bad-base64",
        ),
        pytest.param(
            b"From: =?x-bogus?q?=FF?= <\x00@\xff>\nTo: ,,,<<>>\nSubject: =?utf-8?b?####?=\n"
            b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n--b\n"
            b"Content-Type: message/delivery-status\n\nFinal-Recipient: rfc822; \xff\xfe@\nAction: failed\n"
            b"Status: 9.9.9\n--b--\n",
            id="garbage-headers",
        ),
        pytest.param(b"Subject: x\n\n" + bytes(range(256)) * 40, id="binary-body"),
        pytest.param(b"Subject: only a header", id="header-only"),
    ],
)
def test_broken_input_is_unknown_or_a_report(raw):
    report = classify(raw)
    assert isinstance(report, Report)
    assert report.why


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty message"),
        (b" \r\n\r\n ", "empty message"),
        (bytes(range(256)) * 8, "does not start with a header field"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "does not start with a header field"),
        (b"just some words, no header\n", "does not start with a header field"),
    ],
)
def test_no_message_at_all_raises_bounce_parse_error(raw, reason):
    with pytest.raises(BounceParseError, match=reason) as raised:
        classify(raw)
    assert isinstance(raised.value, ValueError) and "\n" not in str(raised.value)


SAMPLES = [(CORPUS / name).read_bytes() for name in sorted(LABELS)[::6]]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sample=st.sampled_from(SAMPLES),
    cuts=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 64), st.binary(max_size=16)), min_size=1, max_size=4),
)
def test_mutated_corpus_bytes_never_raise_anything_else(sample, cuts):
    """Bytes of corpus files cut, spliced and overwritten at random: a Report or BounceParseError, nothing else."""
    data = sample
    for where, length, insert in cuts:
        at = int(where * len(data))
        data = data[:at] + insert + data[at + length :]
    try:
        report = classify(data)
    except BounceParseError:
        return
    assert isinstance(report, Report)
    for failure in report.failures:
        assert "\n" not in failure.diagnostic and len(failure.diagnostic) <= 300


@pytest.mark.parametrize(
    ("action", "status", "words", "severity", "sender_problem"),
    [
        ("failed", "5.1.1", "550 5.1.1 <a@example.org>: Recipient address rejected: User unknown", "hard", False),
        (
            "failed",
            "5.1.10",
            "550 5.1.10 RESOLVER.ADR.RecipientNotFound; not found by SMTP address lookup",
            "hard",
            False,
        ),
        ("failed", "5.1.2", "550 5.1.2 Host unknown (Name server: example.invalid: host not found)", "soft", False),
        ("failed", "5.1.2", "550 5.1.2 bad destination system address", "hard", False),
        ("failed", "5.0.0", "550 user unknown", "hard", False),
        ("failed", "5.0.0", "550 sorry, no mailbox here by that name", "hard", False),
        ("failed", "5.0.0", "554 delivery error", "soft", False),
        ("failed", "4.2.2", "452 4.2.2 mailbox full", "soft", False),
        ("delayed", "4.4.1", "connection timed out", "deferred", False),
        ("failed", "5.2.2", "552 5.2.2 Mailbox full", "soft", False),
        ("failed", "5.2.1", "550 5.2.1 The email account that you tried to reach is disabled", "soft", False),
        ("failed", "5.2.1", "550 5.2.1 <a@example.org>... User Unknown", "soft", False),  # the code says disabled
        ("failed", "5.3.0", "553 5.3.0 No such user here", "soft", False),
        ("failed", "5.4.1", "550 5.4.1 Recipient address rejected: Access denied", "soft", True),
        ("failed", "5.7.1", "550 5.7.1 Service unavailable; client host blocked using Spamhaus", "soft", True),
        ("failed", "5.7.26", "550 5.7.26 unauthenticated email is not accepted due to DMARC policy", "soft", True),
        ("failed", "5.1.1", "550 5.1.1 message rejected as spam", "soft", True),  # a code misused for a block
        ("failed", "5.1.8", "553 5.1.8 Domain of sender address does not exist", "soft", True),  # the sender's
        ("failed", "5.1.7", "553 5.1.7 bad sender's mailbox address syntax", "soft", True),
        ("failed", None, "550 Requested action not taken: mailbox unavailable", "soft", False),
        ("failed", None, "550 5.1.1 <a@example.org>... User unknown", "hard", False),
        ("failed", None, "utilisateur inconnu", "hard", False),
        ("failed", None, "553 sorry, the domain of sender address does not exist", "soft", True),
        ("failed", None, "550 Sender verify failed", "soft", True),
        ("failed", None, "L'adresse de messagerie n'existe pas", "hard", False),
        ("failed", None, "552 message size exceeds fixed maximum message size", "soft", False),
        ("failed", None, "552 sorry, no such user", "soft", False),  # 552 is storage
        ("failed", None, "554", "soft", False),
        ("failed", None, "user over quota", "soft", False),
        ("failed", None, "", "soft", False),
        ("relayed", "2.1.5", "250 ok", "delivered", False),
    ],
)
def test_severity_rules(action, status, words, severity, sender_problem):
    from newsletter.bounces.heuristics import decide

    verdict = decide(action, status, words)
    assert (verdict.severity, verdict.sender_problem) == (severity, sender_problem)
