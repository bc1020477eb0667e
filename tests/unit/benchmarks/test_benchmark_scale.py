"""benchmarks/scale.py's plan of a run: which tenant each mailbox is, which are
registered through the API, and which registered row each direct copy copies."""

from __future__ import annotations

import pytest

from benchmarks.scale import DOMAIN, plan


def test_mailboxes_go_round_robin_over_the_tenants():
    who = plan(10, api_mailboxes=4, tenants=3)
    assert who.tenant_of == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    assert len(set(who.emails)) == 10


def test_the_first_api_mailboxes_are_on_the_simulator_the_rest_only_rows():
    who = plan(6, api_mailboxes=2, tenants=1)
    assert who.emails[:2] == [f"user0000000@{DOMAIN}", f"user0000001@{DOMAIN}"]
    assert all(email.startswith("bulk") for email in who.emails[2:])


def test_each_tenants_copies_copy_its_own_first_registered_mailbox():
    who = plan(12, api_mailboxes=5, tenants=3)
    # Mailboxes 0, 1 and 2 are the first of tenants 0, 1 and 2, all registered through the API.
    assert who.templates() == who.emails[:3]
    for n in range(who.api_mailboxes, 12):
        template = who.templates()[who.tenant_of[n]]
        assert who.tenant_of[who.emails.index(template)] == who.tenant_of[n]


def test_api_mailboxes_past_the_run_size_mean_all_of_them():
    who = plan(3, api_mailboxes=10, tenants=1)
    assert who.api_mailboxes == 3
    assert not any(email.startswith("bulk") for email in who.emails)


@pytest.mark.parametrize(("mailboxes", "api_mailboxes", "tenants"), [(10, 2, 3), (2, 10, 3), (10, 10, 0)])
def test_a_tenant_without_a_registered_mailbox_is_refused(mailboxes, api_mailboxes, tenants):
    with pytest.raises(ValueError, match="tenants"):
        plan(mailboxes, api_mailboxes, tenants)
