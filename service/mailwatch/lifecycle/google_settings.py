"""A tenant's Google settings: check them, seal the credential, store them; read them back.

Shared by AdminService and the CLI. The settings must describe something real
Gmail accepts: the topic in the credentials' project (Gmail publishes only
there), so a mismatch is refused here instead of at every registration.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

from mailwatch.domain.errors import FieldViolation, InvalidArgument
from mailwatch.domain.models import Credential, GoogleSettings, OAuthCredential, ServiceAccountCredential
from mailwatch.domain.projects import credential_project, topic_project
from mailwatch.secrets import SecretBox
from mailwatch.store import google_settings as store
from mailwatch.store.db import Sessions

_SUBSCRIPTION = re.compile(r"^projects/[^/]+/subscriptions/[^/]+$")
# Google project ids: 6-30 of [a-z0-9-], starting with a letter; legacy ones carry a "domain:" prefix.
_PROJECT_ID = re.compile(r"^([a-z0-9.-]+:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$")


@dataclass(frozen=True)
class GoogleSettingsInput:
    """What an operator sets; `credential` has an empty subject / refresh token."""

    credential: Credential = field(repr=False)
    pubsub_topic: str
    project_id: str = ""  # required for an OAuth client; a key names its own
    pubsub_subscription: str = ""  # empty: push delivery
    push_audience: str = ""
    gmail_units_per_minute: int | None = None  # the tenant's own Gmail quota budget; None: the deployment's


def checked(settings: GoogleSettingsInput) -> tuple[str, str]:
    """(project id, credential id) of valid settings; InvalidArgument naming every problem."""
    problems: list[FieldViolation] = []
    project = settings.project_id.strip()
    if isinstance(settings.credential, ServiceAccountCredential):
        own = credential_project(settings.credential) or ""
        credential_id = str(settings.credential.info.get("client_email", ""))
        if not own:
            problems.append(FieldViolation("service_account.json_key", "the key names no project_id"))
        elif project and project != own:
            problems.append(FieldViolation("project_id", f"the key belongs to project '{own}', not '{project}'"))
        project = project or own
    else:
        assert isinstance(settings.credential, OAuthCredential)
        credential_id = settings.credential.client_id
        if not project:
            problems.append(FieldViolation("project_id", "required with an OAuth client: the project it was created in"))
    if project and not _PROJECT_ID.match(project):
        problems.append(FieldViolation("project_id", "not a Google project id"))
    in_topic = topic_project(settings.pubsub_topic)
    if in_topic is None:
        problems.append(FieldViolation("pubsub_topic", "must be projects/<project>/topics/<name>"))
    elif project and in_topic != project:
        problems.append(FieldViolation(
            "pubsub_topic", f"must be in the credentials' project '{project}' (Gmail only publishes there), "
                            f"not '{in_topic}'"))
    if settings.pubsub_subscription and not _SUBSCRIPTION.match(settings.pubsub_subscription):
        problems.append(FieldViolation("pubsub_subscription", "must be projects/<project>/subscriptions/<name>"))
    if problems:
        raise InvalidArgument(problems)
    return project, credential_id


async def save_google_settings(
    sessions: Sessions, box: SecretBox, tenant_id: uuid.UUID, settings: GoogleSettingsInput
) -> GoogleSettings:
    """Check, seal and store; NotFound for an unknown tenant."""
    project, credential_id = checked(settings)
    return await store.save_settings(
        sessions, tenant_id, project_id=project, secret=box.seal_shared(settings.credential),
        credential_id=credential_id,
        pubsub_topic=settings.pubsub_topic, pubsub_subscription=settings.pubsub_subscription or None,
        push_audience=settings.push_audience or None, gmail_units_per_minute=settings.gmail_units_per_minute,
        opens=lambda stored: box.opens(stored, tenant_id=tenant_id),
    )

