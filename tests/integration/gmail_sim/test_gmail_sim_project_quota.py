"""Gmail's per-project quota (1,200,000 units a minute per Cloud project), through the real client."""

from __future__ import annotations

import json
import re

import pytest
from googleapiclient.errors import HttpError

from mailwatch_devstack.gmail_sim import SimulatorControlError
from tests.integration.gmail_sim.support import ALICE, BOB, Gmail

pytestmark = pytest.mark.integration

# Google's wording for a project over its per-minute quota (no retry time, consumer named by number).
PROJECT_LIMIT_TEXT = re.compile(r"Quota exceeded for quota metric 'Queries' and limit 'Queries per minute' of "
                                r"service 'gmail\.googleapis\.com' for consumer 'project_number:\d{12}'\.")


@pytest.fixture
def other_project(sim, control):
    """Credentials of a second Google Cloud project, for the same mailboxes."""
    helper = Gmail(sim.url, control, project="other-project")
    try:
        yield helper
    finally:
        helper.close()


@pytest.fixture
def services(control, gmail, other_project):
    control.create_mailboxes([ALICE, BOB])
    built = {(project, user): helper.for_user(user)
             for project, helper in (("sim", gmail), ("other", other_project)) for user in (ALICE, BOB)}
    for service in built.values():
        service.users().labels().list(userId="me").execute()  # tokens fetched before the limit is set (1 unit)
    control.reset_counters()
    control.advance_clock(61)  # those units leave the quota window
    control.configure(project_quota_units_per_minute=12)  # Gmail's is 1,200,000; 12 keeps the test short
    return built


def project_limit_error(call) -> dict:
    with pytest.raises(HttpError) as limited:
        call.execute()
    assert limited.value.resp.status == 429
    assert "retry-after" not in limited.value.resp
    return json.loads(limited.value.content)["error"]


def test_project_over_its_minute_is_refused_with_gmails_429(control, services):
    alice, bob = services["sim", ALICE], services["sim", BOB]
    alice.users().messages().list(userId="me").execute()  # 5 units
    bob.users().messages().list(userId="me").execute()  # 10: the project's units, whoever the user
    alice.users().getProfile(userId="me").execute()  # 11
    error = project_limit_error(bob.users().messages().list(userId="me"))  # 16: over
    assert error["code"] == 429 and error["status"] == "RESOURCE_EXHAUSTED"
    assert PROJECT_LIMIT_TEXT.fullmatch(error["message"]), error["message"]
    assert error["errors"] == [{"message": error["message"], "domain": "usageLimits", "reason": "rateLimitExceeded"}]
    # Every user of the project is refused the same way; the project's number stays the same.
    assert project_limit_error(alice.users().getProfile(userId="me")) == error
    # Another project's calls for the same users are not affected, and no user is locked out.
    assert services["other", ALICE].users().getProfile(userId="me").execute()["emailAddress"] == ALICE
    assert services["other", BOB].users().messages().list(userId="me").execute() == {"resultSizeEstimate": 0}
    assert control.faults()["lockouts"] == {}
    # Refused calls still cost quota, as for the per-user limit.
    assert control.counters()["quotaUnits"] == {ALICE: 5 + 1 + 1 + 1, BOB: 5 + 5 + 5}


def test_the_project_minute_rolls_on_the_simulated_clock(control, services):
    alice, bob = services["sim", ALICE], services["sim", BOB]
    alice.users().messages().list(userId="me").execute()  # 5
    control.advance_clock(50)
    bob.users().messages().list(userId="me").execute()  # 10
    project_limit_error(alice.users().messages().list(userId="me"))  # 15 (refused, still charged)
    control.advance_clock(11)  # the first 5 units left the window; the last 10 have not
    alice.users().getProfile(userId="me").execute()  # 11
    alice.users().getProfile(userId="me").execute()  # 12: exactly the limit
    project_limit_error(bob.users().getProfile(userId="me"))  # 13
    control.advance_clock(61)  # everything left the window
    alice.users().messages().list(userId="me").execute()
    bob.users().messages().list(userId="me").execute()


def test_control_api_sets_lifts_and_resets_the_project_quota(control, services):
    assert control.config()["projectQuotaUnitsPerMinute"] == 12
    alice = services["sim", ALICE]
    for _ in range(2):
        alice.users().messages().list(userId="me").execute()  # 10
    project_limit_error(alice.users().messages().list(userId="me"))  # 15
    control.configure(project_quota_units_per_minute=None)  # no limit
    assert control.config()["projectQuotaUnitsPerMinute"] is None
    for _ in range(3):
        alice.users().messages().list(userId="me").execute()
    with pytest.raises(SimulatorControlError) as rejected:
        control.configure(project_quota_units_per_minute=0)
    assert rejected.value.status == 400
    assert control.config()["projectQuotaUnitsPerMinute"] is None
    control.reset()
    assert control.config()["projectQuotaUnitsPerMinute"] == 1_200_000  # Gmail's published limit
