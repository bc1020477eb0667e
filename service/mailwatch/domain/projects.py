"""Google projects: which project a topic lives in and which project credentials act for.

Gmail only publishes to a topic in the developer project executing users.watch
(the service-account key's `project_id`; the project an OAuth client was
created in), so a registration whose topic and credentials disagree can be
refused before Gmail is asked. Pure logic, no I/O.
"""

from __future__ import annotations

import re

from mailwatch.domain.errors import TopicProjectMismatch
from mailwatch.domain.models import Credential, ServiceAccountCredential

_TOPIC = re.compile(r"^projects/(?P<project>[^/]+)/topics/[^/]+$")


def topic_project(topic: str) -> str | None:
    """The project id of `projects/<project>/topics/<name>`, or None for anything else."""
    match = _TOPIC.match(topic)
    return match.group("project") if match else None


def credential_project(credential: Credential) -> str | None:
    """The project the credentials act for, when they say so (a service-account key does;
    an OAuth client id does not name its project)."""
    if isinstance(credential, ServiceAccountCredential):
        project = credential.info.get("project_id")
        return project if isinstance(project, str) and project else None
    return None


def check_topic_project(topic: str, credential: Credential) -> None:
    """Raise TopicProjectMismatch when both projects are known and differ."""
    own = credential_project(credential)
    if own is not None and topic_project(topic) not in (None, own):
        raise TopicProjectMismatch.between(topic=topic, credentials_project=own)
