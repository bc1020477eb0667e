"""Gmail's search syntax in the simulator: each operator, grouping and negation, and the refusal
(never the silent ignoring) of what the simulator cannot evaluate."""

from datetime import datetime, timezone

import pytest

from mailwatch_devstack.gmail_sim.search import PACIFIC, MessageView, UnsupportedQuery, parse

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)
NOW_MS = int(NOW.timestamp() * 1000)
DAY_MS = 86_400_000


def view(*, labels=("INBOX",), user_labels=(), subject="", sender="", to="", cc="", body="", age_days=0.0,
         attachment=False) -> MessageView:
    headers = {name: value for name, value in (("subject", subject), ("from", sender), ("to", to), ("cc", cc))
               if value}
    return MessageView(frozenset(labels), frozenset(n.casefold() for n in user_labels), headers, body,
                       NOW_MS - int(age_days * DAY_MS), lambda: attachment)


def matches(q: str, message: MessageView) -> bool:
    return parse(q, now_ms=NOW_MS).matches(message)


def test_header_operators_match_whole_words_case_insensitively():
    m = view(sender="Alice Example <alice@example.com>", to="bob@corp.test", cc="carol@corp.test",
             subject="Quarterly Report due")
    assert matches("from:alice", m) and matches("from:alice@example.com", m) and matches("from:example.com", m)
    assert not matches("from:ali", m), "a prefix is not a word"
    assert not matches("from:bob", m)
    assert matches("to:bob", m) and not matches("to:carol", m) and matches("cc:carol", m)
    assert matches("subject:report", m) and matches('subject:"quarterly report"', m)
    assert not matches('subject:"report quarterly"', m), "a quoted value is a phrase, in order"


def test_plain_words_and_phrases_search_subject_body_and_addresses():
    m = view(subject="Invoice 42", body="Please pay the amount by Friday.", sender="billing@shop.test")
    assert matches("invoice", m) and matches("friday", m) and matches("billing", m)
    assert matches('"pay the amount"', m) and not matches('"pay amount"', m)
    assert matches("invoice friday", m), "words are ANDed"
    assert not matches("invoice monday", m)


def test_negation_or_groups_and_braces():
    a, b, c = view(subject="alpha"), view(subject="beta"), view(subject="gamma")
    assert [matches("alpha OR beta", m) for m in (a, b, c)] == [True, True, False]
    assert [matches("{alpha beta}", m) for m in (a, b, c)] == [True, True, False]
    assert [matches("-alpha", m) for m in (a, b, c)] == [False, True, True]
    assert [matches("-{alpha beta}", m) for m in (a, b, c)] == [False, False, True]
    assert [matches("(alpha OR gamma) -gamma", m) for m in (a, b, c)] == [True, False, False]
    assert [matches("alpha AND beta", m) for m in (a, b, c)] == [False, False, False]
    assert not matches("alpha or beta", b), "only upper-case OR is the operator"


def test_labels_folders_and_states():
    m = view(labels=("INBOX", "UNREAD", "Label_1", "CATEGORY_SOCIAL"), user_labels=("Work Stuff",))
    assert matches("label:work-stuff", m) and matches('label:"work stuff"', m) and matches("label:inbox", m)
    assert not matches("label:other", m), "an unknown label matches nothing (as in Gmail)"
    assert matches("in:inbox is:unread category:social has:userlabels", m)
    assert not matches("is:read", m) and not matches("is:starred", m) and not matches("in:sent", m)
    assert not matches("has:nouserlabels", m)
    sent = view(labels=("SENT", "STARRED"))
    assert matches("in:sent is:read is:starred has:nouserlabels", sent)
    assert matches("in:drafts", view(labels=("DRAFT",)))


def test_spam_and_trash_are_reached_only_when_the_query_names_them():
    for q in ("in:trash", "in:spam", "in:anywhere", "label:trash", "x OR in:spam"):
        assert parse(q, now_ms=NOW_MS).reaches_spam_trash, q
    for q in ("in:inbox", "-in:trash", "-in:anywhere", "trash"):
        assert not parse(q, now_ms=NOW_MS).reaches_spam_trash, q
    assert matches("in:trash", view(labels=("TRASH",))) and not matches("in:trash", view())


def test_attachments():
    assert matches("has:attachment", view(attachment=True))
    assert not matches("has:attachment", view())
    assert matches("-has:attachment", view())


def test_dates_are_midnight_pacific_or_epoch_seconds():
    midnight = int(datetime(2026, 12, 1, tzinfo=PACIFIC).timestamp() * 1000)

    def at(ms):
        return MessageView(frozenset(), frozenset(), {}, "", ms, lambda: False)

    for q in ("after:2026/12/01", "after:2026-12-01", "after:12/01/2026", f"after:{midnight // 1000}"):
        assert matches(q, at(midnight)) and not matches(q, at(midnight - 1)), q
    assert matches("before:2026/12/01", at(midnight - 1)) and not matches("before:2026/12/01", at(midnight))
    assert matches("after:2026/11/30 before:2026/12/02", at(midnight))


def test_relative_ages_count_from_the_simulated_clock():
    assert matches("newer_than:2d", view(age_days=1.9)) and not matches("newer_than:2d", view(age_days=2.1))
    assert matches("older_than:2d", view(age_days=2.1)) and not matches("older_than:2d", view(age_days=1.9))
    assert matches("newer_than:1m", view(age_days=29)) and not matches("newer_than:1m", view(age_days=31))
    assert matches("older_than:1y", view(age_days=366)) and not matches("older_than:1y", view(age_days=364))


@pytest.mark.parametrize(("q", "named"), [
    ("filename:report.pdf", "filename:"), ("larger:10M", "larger:"), ("size:1000", "size:"),
    ("is:muted", "is:muted"), ("in:snoozed", "in:snoozed"), ("has:drive", "has:drive"),
    ("category:reservations", "category:reservations"), ("from:a rfc822msgid:<x@y>", "rfc822msgid:"),
    ("-list:info@example.com", "list:"), ("deliveredto:me@x.test OR alpha", "deliveredto:"),
])
def test_an_operator_the_simulator_cannot_evaluate_is_refused_by_name(q, named):
    with pytest.raises(UnsupportedQuery) as refused:
        parse(q, now_ms=NOW_MS)
    assert f"'{named}" in str(refused.value)


@pytest.mark.parametrize("q", ["(alpha", "alpha)", "OR", "alpha OR", "{}", "()", "after:yesterday",
                               "older_than:3w", "subject:", "subject:(a b)", "-"])
def test_malformed_queries_are_refused(q):
    with pytest.raises(UnsupportedQuery):
        parse(q, now_ms=NOW_MS)


def test_an_unknown_prefix_is_plain_text_as_in_gmail():
    assert matches("ticket:4711", view(body="see ticket 4711 for details"))
    assert parse("   ", now_ms=NOW_MS).matches(view())
