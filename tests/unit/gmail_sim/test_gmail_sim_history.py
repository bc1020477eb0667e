"""History log: bisect lookup, filters, paging, expiry."""

import pytest

from mailwatch_devstack.gmail_sim.history import (
    LABEL_ADDED,
    LABEL_REMOVED,
    MESSAGE_ADDED,
    MESSAGE_DELETED,
    HistoryExpired,
    HistoryLog,
    HistoryRecord,
)


def make_log(n=10, floor=100, step=2):
    log = HistoryLog(floor=floor)
    kinds = [MESSAGE_ADDED, LABEL_ADDED, LABEL_REMOVED, MESSAGE_DELETED]
    for i in range(n):
        kind = kinds[i % 4]
        labels = ("INBOX",) if i % 2 == 0 else ("Label_1",)
        changed = ("STARRED",) if kind in (LABEL_ADDED, LABEL_REMOVED) else ()
        log.append(HistoryRecord(floor + step * (i + 1), float(i), kind, f"m{i}", f"t{i}", labels, changed))
    return log


def test_returns_records_after_start_in_order():
    log = make_log()
    page, nxt = log.query(106)
    assert [r.id for r in page] == [108, 110, 112, 114, 116, 118, 120]
    assert nxt is None


def test_start_between_ids_uses_bisect():
    log = make_log()
    page, _ = log.query(107)
    assert page[0].id == 108


def test_paging_resumes_after_last_returned_and_stops_exactly():
    log = make_log(n=10)
    seen, after = [], None
    pages = 0
    while True:
        page, after = log.query(100, max_results=3, page_after=after)
        seen += [r.id for r in page]
        pages += 1
        if after is None:
            break
    assert seen == [102 + 2 * i for i in range(10)]
    assert pages == 4  # 3+3+3+1; no empty trailing page


def test_full_last_page_has_no_token_when_nothing_left():
    log = make_log(n=6)
    page, after = log.query(100, max_results=3, page_after=106)
    assert len(page) == 3 and after is None


def test_history_types_filter():
    log = make_log(n=8)
    page, _ = log.query(100, types=frozenset({MESSAGE_ADDED}))
    assert {r.kind for r in page} == {MESSAGE_ADDED}
    assert len(page) == 2


def test_label_filter_matches_message_labels_and_changed_labels():
    log = make_log(n=8)
    inbox, _ = log.query(100, label_id="INBOX")
    assert all("INBOX" in r.label_ids for r in inbox) and len(inbox) == 4
    starred, _ = log.query(100, label_id="STARRED")
    assert {r.kind for r in starred} == {LABEL_ADDED, LABEL_REMOVED}


def test_filtered_paging_token_only_when_another_match_exists():
    log = make_log(n=8)
    page, after = log.query(100, types=frozenset({MESSAGE_ADDED}), max_results=1)
    assert len(page) == 1 and after == page[0].id
    page2, after2 = log.query(100, types=frozenset({MESSAGE_ADDED}), max_results=1, page_after=after)
    assert len(page2) == 1 and after2 is None


def test_start_below_floor_is_expired():
    log = make_log()
    with pytest.raises(HistoryExpired):
        log.query(99)
    log.query(100)  # the floor itself is valid


def test_expire_through_raises_floor_and_drops_records():
    log = make_log()
    log.expire_through(110)
    assert log.floor == 110
    assert len(log) == 5
    with pytest.raises(HistoryExpired):
        log.query(108)
    page, _ = log.query(110)
    assert page[0].id == 112


def test_page_token_below_floor_is_expired():
    log = make_log()
    page, after = log.query(100, max_results=2)
    log.expire_through(110)
    with pytest.raises(HistoryExpired):
        log.query(100, page_after=after)


def test_expire_older_than_uses_record_time():
    log = make_log()  # record i has time i
    log.expire_older_than(3.0)  # drops times 0,1,2 -> ids 102,104,106
    assert log.floor == 106
    assert log.query(106)[0][0].id == 108


def test_ids_must_increase():
    log = make_log(n=1)
    with pytest.raises(ValueError):
        log.append(HistoryRecord(101, 0.0, MESSAGE_ADDED, "x", "x", ()))


def test_scales_with_bisect():
    log = HistoryLog(floor=0)
    for i in range(1, 50_001):
        log.append(HistoryRecord(i, 0.0, MESSAGE_ADDED, "m", "t", ("INBOX",)))
    page, after = log.query(49_990, max_results=5)
    assert [r.id for r in page] == [49_991, 49_992, 49_993, 49_994, 49_995]
    assert after == 49_995


def test_record_json_shapes():
    added = HistoryRecord(5, 0.0, MESSAGE_ADDED, "m", "t", ("INBOX",)).to_json()
    # Gmail's documented shape: history messages carry only id and threadId.
    assert added == {"id": "5", "messages": [{"id": "m", "threadId": "t"}],
                     "messagesAdded": [{"message": {"id": "m", "threadId": "t"}}]}
    label = HistoryRecord(6, 0.0, LABEL_ADDED, "m", "t", ("INBOX", "STARRED"), ("STARRED",)).to_json()
    assert label["labelsAdded"] == [{"message": {"id": "m", "threadId": "t"}, "labelIds": ["STARRED"]}]
    removed = HistoryRecord(7, 0.0, LABEL_REMOVED, "m", "t", ("INBOX",), ("STARRED",)).to_json()
    assert removed["labelsRemoved"][0]["labelIds"] == ["STARRED"]
    deleted = HistoryRecord(8, 0.0, MESSAGE_DELETED, "m", "t", ("INBOX",)).to_json()
    assert deleted["messagesDeleted"] == [{"message": {"id": "m", "threadId": "t"}}]
