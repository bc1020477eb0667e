"""Google projects: which project a topic lives in and which project credentials act for.

Gmail only publishes to a topic in the developer project executing users.watch
(the service-account key's `project_id`; the project an OAuth client was
created in), so a registration whose topic and credentials disagree can be
refused before Gmail is asked. Pure logic, no I/O.
"""

from __future__ import annotations

import re

from mailwatch.domain.errors import (
    FieldViolation,
    GmailTopicNotPublishable,
    InvalidArgument,
    NoDefaultCredentials,
    TopicProjectMismatch,
)
from mailwatch.domain.models import (
    Credential,
    GoogleSettings,
    LabelFilter,
    LabelFilterBehavior,
    OAuthCredential,
    ServiceAccountCredential,
    TenantDefaultCredential,
)

_TOPIC = re.compile(r"^projects/(?P<project>[^/]+)/topics/[^/]+$")


def topic_project(topic: str) -> str | None:
    """The project id of `projects/<project>/topics/<name>`, or None for anything else."""
    match = _TOPIC.match(topic)
    return match.group("project") if match else None


def credential_project(credential: Credential) -> str | None:
    """The project id the credentials act for, when they say so (a service-account key does;
    an OAuth client id names only its project's number: `quota_project`)."""
    if isinstance(credential, ServiceAccountCredential):
        project = credential.info.get("project_id")
        return project if isinstance(project, str) and project else None
    return None


# Google OAuth client ids are `<project number>-<hash>.apps.googleusercontent.com`: the
# number of the project the client was created in (the number, not the project id).
_OAUTH_CLIENT_PROJECT = re.compile(r"^(?P<number>[0-9]+)-[^.]+\.apps\.googleusercontent\.com$")


def quota_project(credential: Credential) -> str | None:
    """The project whose Gmail quota the credentials' calls are charged to, as Google names
    it: a service-account key's project id, an OAuth client's project number (from its
    client id); None when neither says."""
    if isinstance(credential, OAuthCredential):
        match = _OAUTH_CLIENT_PROJECT.match(credential.client_id)
        return match.group("number") if match else None
    return credential_project(credential)


def resolve_credential(
    requested: Credential | TenantDefaultCredential, settings: GoogleSettings | None, email_address: str
) -> Credential:
    """The credential a registration uses: its own, or the tenant's defaults made its own."""
    if not isinstance(requested, TenantDefaultCredential):
        return requested
    if settings is None:
        raise NoDefaultCredentials(
            "the tenant has no default Google credentials: pass service_account or oauth credentials, "
            "or ask the operator to set the tenant's Google settings"
        )
    if isinstance(settings.credential, OAuthCredential) and not requested.refresh_token:
        raise InvalidArgument([FieldViolation(
            "oauth.refresh_token", "required: the tenant's default credentials are an OAuth client")])
    if isinstance(settings.credential, ServiceAccountCredential) and requested.refresh_token:
        raise InvalidArgument([FieldViolation(
            "oauth", "the tenant's default credentials are a service account: send no OAuth credentials")])
    return settings.mailbox_credential(email_address, requested.refresh_token)


def watch_topic_for(
    credential: Credential, *, from_tenant_defaults: bool, settings: GoogleSettings | None, deployment_topic: str
) -> str:
    """The topic a registration watches with: the tenant's when it has one in the
    credentials' project, else the deployment's; TopicProjectMismatch when the
    credentials' project is known and no configured topic is in it."""
    candidates = [topic for topic in ((settings.pubsub_topic if settings else ""), deployment_topic) if topic]
    if not candidates:
        raise GmailTopicNotPublishable(
            "no Pub/Sub topic configured: neither the tenant's Google settings nor the deployment "
            "(MAILWATCH_PUBSUB_TOPIC) name one"
        )
    project = credential_project(credential)
    if project is None and from_tenant_defaults and settings is not None:
        project = settings.project_id  # an OAuth client's project, as the operator declared it
    if project is None:
        return candidates[0]  # unknown here; Gmail will say if it disagrees
    for topic in candidates:
        if topic_project(topic) == project:
            return topic
    raise TopicProjectMismatch.between(topic=candidates[0], credentials_project=project)


def union_filter(filters: list[LabelFilter]) -> LabelFilter:
    """One Gmail watch filter that reports at least what each of `filters` wants.

    Gmail keeps one watch per user and project, so registrations sharing it
    need a filter that is never narrower than any of theirs (each registration
    still filters its own events): no filter when any wants everything or the
    behaviours are mixed; INCLUDE of the union of included labels; EXCLUDE of
    the labels every registration excludes.
    """
    if not filters or any(not f.label_ids for f in filters):
        return LabelFilter()
    behaviors = {f.behavior for f in filters}
    if behaviors == {LabelFilterBehavior.INCLUDE}:
        labels = dict.fromkeys(label for f in filters for label in f.label_ids)
        return LabelFilter(tuple(sorted(labels)), LabelFilterBehavior.INCLUDE)
    if behaviors == {LabelFilterBehavior.EXCLUDE}:
        common = set(filters[0].label_ids).intersection(*(f.label_ids for f in filters[1:]))
        return LabelFilter(tuple(sorted(common)), LabelFilterBehavior.EXCLUDE) if common else LabelFilter()
    return LabelFilter()
