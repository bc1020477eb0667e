"""A faithful Gmail API simulator (HTTP), with a control API for tests and the dev stack.

Use in-process::

    from mailwatch_devstack.gmail_sim import GmailSimulator, SimulatorControl

    sim = GmailSimulator(pubsub_emulator_host="127.0.0.1:8085")   # or None: notifications only logged
    url = sim.start(host="127.0.0.1", port=0)                     # "http://127.0.0.1:PORT", background thread
    control = SimulatorControl(url)
    ...
    sim.stop()

or as a process: ``mailwatch gmail-sim --host H --port P [--pubsub-emulator-host H:P] [--state-file F]``
(prints ``gmail-sim listening on http://H:P`` when ready). With a state file
(``GmailSimulator(state_file=...)``) the mailboxes, history, credentials and push subscriptions are
loaded from it at start and saved to it at stop (``snapshot.py``).

Talking to it as to Google
--------------------------
``googleapiclient.discovery.build("gmail", "v1", static_discovery=True, credentials=creds,
client_options={"api_endpoint": url})``. Credentials are real google-auth objects whose
``token_uri`` is ``f"{url}/token"``:

* service account with domain-wide delegation:
  ``service_account.Credentials.from_service_account_info(control.create_service_account_key(),
  scopes=[...], subject=email)`` (the key's ``token_uri`` already points at the simulator);
* per-user OAuth: ``credentials.Credentials(token=None, refresh_token=control.issue_refresh_token(
  client["clientId"], email), client_id=..., client_secret=..., token_uri=control.token_uri)``.

Batch: google-api-python-client's ``service.new_batch_http_request()`` builds its URI from the
discovery document's ``rootUrl`` and ignores ``api_endpoint`` (googleapis/google-api-python-client
#1107), so it would post to Google. Use
``googleapiclient.http.BatchHttpRequest(callback=..., batch_uri=f"{url}/batch/gmail/v1")``
(``control.batch_uri``); ``{url}/batch`` is served too.

Gmail API surface: ``users.getProfile``, ``users.watch``, ``users.stop``, ``users.history.list``,
``users.messages.list``, ``users.messages.get`` (minimal / metadata / full / raw),
``users.messages.attachments.get``, ``users.labels.list`` / ``get``, ``users.settings.sendAs.list``,
and the batch endpoint (≤100 parts; more is 400 "Inner request count
exceeds the limit. Received: N, Limit: 100"). Each part is counted and charged. With
``batchPartsConcurrent: true`` (Gmail's way, the default) the
parts are separate requests run together: each holds one of its user's concurrency slots until the batch
is answered, so parts past ``concurrentRequestsPerUser`` are answered 429 "Too many concurrent requests for
user." one by one inside a 200 batch; off, they run one at a time. Errors are Gmail-shaped:
``{"error": {"code", "message", "errors": [{"message", "domain", "reason"}], "status"}}``.

Behaviour worth knowing:

* History ids increase with every change, with small random gaps. ``history.list`` returns records
  with id > ``startHistoryId`` (one record per change, with ``messages`` plus one of
  ``messagesAdded`` / ``messagesDeleted`` / ``labelsAdded`` / ``labelsRemoved``), filtered by
  ``historyTypes`` and ``labelId``, paged by ``maxResults`` (default 100, max 500) and
  ``pageToken``; ``historyId`` is the mailbox's current id. With ``historyLabelIds: true`` (real
  Gmail's way, the default), the message of a
  ``messagesAdded`` / ``labelsAdded`` / ``labelsRemoved`` entry carries ``labelIds``: its labels
  **when the page is served**, not when the record happened (none once the message is gone); off,
  messages carry only ``id`` and ``threadId``, which the discovery document allows. ``labelsAdded`` / ``labelsRemoved`` entries also carry the ``labelIds`` they changed; a
  relabel made with ``oneRecord`` is one record with both. ``emptyHistoryPages: true`` precedes
  every page of records with one carrying a ``nextPageToken`` and no ``history``, as Gmail may.
  ``messageVisibilityDelaySeconds``: for that long after a message is added (inserted, a draft
  version saved, a draft sent), ``messages.get`` answers 404 for it although the history lists it. A ``startHistoryId`` below the
  retained floor answers 404 (notFound). History older than 7 days (simulated clock) expires.
  Malformed / unknown parameters answer 400.
* ``messages.list``'s ``q`` is evaluated with Gmail's search operators (``search.py``): ``from:`` /
  ``to:`` / ``cc:`` / ``bcc:`` / ``subject:``, ``label:``, ``in:`` (inbox, sent, drafts, trash, spam,
  anywhere, …), ``is:`` (unread, read, starred, important), ``has:`` (attachment, userlabels,
  nouserlabels), ``category:``, ``after:`` / ``before:`` (midnight Pacific, or epoch seconds),
  ``older_than:`` / ``newer_than:``, quoted phrases, plain words (subject, body, addresses; whole
  words), ``-``, ``OR`` / ``AND``, ``( )`` and ``{ }``; a query naming spam or trash searches them
  without ``includeSpamTrash``. An operator it cannot evaluate (``filename:``, ``size:``,
  ``is:muted``, …) or a malformed query answers 400 "Invalid query: …" naming it: stricter than
  Gmail, never an ignored filter.
* A token works only for its own user (``me`` resolves to it); another user's mailbox answers 403
  "Delegation denied". A mailbox may have aliases: a refresh token issued for one yields the primary
  address's token; ``getProfile`` and notifications name the primary address; ``settings.sendAs.list``
  lists the primary address and each alias (``treatAsAlias``, ``accepted``); addressing
  ``users/{alias}/…`` answers 403 "Delegation denied for <primary>", as Gmail does (call as ``me``).
  Unknown, expired (simulated clock) or revoked tokens answer 401 with ``WWW-Authenticate``. Revoked
  users get ``invalid_grant`` (HTTP 400) from ``/token``.
* Domain-wide delegation is granted per domain, client id and scope (``grant_delegation``), as a
  Workspace administrator grants it: a service-account key impersonates nobody until the subject's
  domain grants its ``client_id`` every requested scope; otherwise ``unauthorized_client`` (HTTP 401).
  Impersonating an alias (JWT ``sub``) is ``invalid_request`` "Invalid impersonation prn email
  address." (HTTP 400); only primary addresses can be impersonated. An unknown OAuth client or a wrong
  secret is ``invalid_client`` (HTTP 401, "The OAuth client was not found." / "Unauthorized"), a deleted
  one ``deleted_client`` "The OAuth client was deleted." (HTTP 401; ``delete_oauth_client``, restorable).
* Messages inserted from their RFC 822 source (``insert_raw_message``): ``format=full`` is the MIME
  tree (``MessagePart``: ``partId`` "", "0", "1.0", …, ``mimeType``, ``filename``, the part's headers,
  ``body`` ``{size, data}``, or ``{attachmentId, size}`` for a part with a file name, ``{size: 0}`` for a
  multipart), ``users.messages.attachments.get`` serves an attachment as ``{attachmentId, size, data}``
  (base64url; any size: the control API accepts bodies up to 64 MB), an id that is not one of the
  message's attachments is 400 "Invalid attachment token" (``invalidArgument``); ``format=raw`` is the
  source byte for byte; ``metadata`` its top-level headers (unfolded), the snippet its first text part.
  The metadata scope may not read attachments (403 ``insufficientPermissions``).
* Every token belongs to a Google developer project: the service-account key's ``project_id``, or
  the project the OAuth client was created in (``projectId`` when creating either; default
  ``GmailSimulator(default_project=...)``, ``sim-project`` unless set). ``watch``'s topic must be in that project, else 400 invalidArgument "Invalid
  topicName does not match projects/<project>/topics/*". One push client per user per project:
  watching again with the same topic replaces the filter, another topic while that project's watch
  is live is 400 "Only one user push notification client allowed per developer (call /stop then
  try again)", and ``stop`` ends the project's watch for every caller of that project. Watches of
  different projects on one user coexist, each with its own topic and 1/s budget.
* ``watch`` validates ``topicName`` (``projects/*/topics/*``; with an emulator configured, the topic
  must exist, else 404 "Resource not found"), ``labelIds`` and ``labelFilterBehavior`` (or legacy
  ``labelFilterAction``); it returns ``historyId`` and ``expiration`` (7 days ahead, ms, simulated
  clock), and immediately sends one notification. Each later change the filter matches publishes
  ``{"emailAddress": ..., "historyId": <number>}`` (compact JSON; see ``notificationHistoryIdType``)
  to the topic, at most one per second per user on the simulated clock (extras are dropped).
  Notifications stop after ``users.stop`` or once the watch expires. Publishing happens on a
  background thread.
* Rate limits answer as Gmail does: 429 (``rateLimitExceeded``) or 403 (``userRateLimitExceeded``),
  domain ``usageLimits``, status ``RESOURCE_EXHAUSTED``, the retry time in the message ("User-rate limit
  exceeded.  Retry after 2026-11-29T17:20:36.724Z", simulated clock) and no ``Retry-After`` header. Such
  a fault locks the user out until that time: every call before it gets the same answer and still costs
  quota. More than ``concurrentRequestsPerUser`` (default 10) calls in flight for one user: 429 "Too many
  concurrent requests for user." (``rateLimitExceeded``). More than ``userQuotaUnitsPerMinute`` (default
  6,000: Gmail's for Cloud projects created since May 2026; older ones have 15,000) quota units in 60 s
  for one user: a ``userRateLimitExceeded`` lockout until the window allows again.
  More than ``projectQuotaUnitsPerMinute`` (default 1,200,000) units in 60 s for one Google Cloud project
  (the token's: the service-account key's ``project_id`` or the OAuth client's project), whoever the
  users: 429 ``rateLimitExceeded``, domain ``usageLimits``, "Quota exceeded for quota metric 'Queries' and
  limit 'Queries per minute' of service 'gmail.googleapis.com' for consumer 'project_number:<12 digits>'."
  (no retry time), for every call of that project until its window allows again; other projects are
  unaffected. Both limits charge refused calls too.
* Permanent refusals can be injected per user (``refuse_user``): 403 "Delegation denied for <user>"
  (``forbidden``), 403 ``domainPolicy``, 403 ``insufficientPermissions``, 400 ``failedPrecondition``
  "Mail service not enabled"; at the token endpoint ``invalid_grant`` with Google's clock-skew text
  ("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your
  iat and exp values in the JWT claim.", JWT grants only), ``unauthorized_client``,
  ``admin_policy_enforced`` (the Workspace administrator blocks the app) and ``policy_enforced``
  (Advanced Protection; refresh-token grants only), each with Google's description.
* ``watch`` refuses a topic Gmail may not publish to (``set_gmail_publisher(topic, granted=False)``: no
  publisher role for gmail-api-push@system.gserviceaccount.com; topics allow it unless told otherwise,
  as after ``mailwatch pubsub ensure``) with 403 ``forbidden`` "Error sending test message to Cloud
  PubSub <topic> : User not authorized to perform this action.", and a label id the mailbox does not
  have (a name is not an id) with 400 ``invalidArgument`` "Invalid label: <id>"; so does
  ``messages.list`` for such a ``labelIds`` value.
* ``labelFilterBehavior`` / ``labelFilterAction`` accept only the discovery document's spelling,
  ``include`` / ``exclude``.
* Quota units per call follow Google's published table (getProfile 1, watch 100, stop 50,
  history.list 2, messages.list 5, messages.get 5, messages.attachments.get 5, labels.list/get 1,
  settings.sendAs.list 1); every call is counted per
  user and per method, fault-injected ones included. Token grants count as ``oauth2.token`` (0 units).

Control API (HTTP JSON; ``SimulatorControl`` method in brackets)
----------------------------------------------------------------
======  =========================================  ==============================================================
POST    /_sim/reset                                clear everything: mailboxes, credentials, faults, clock, counters [reset]
GET     /_sim/config                               current settings [config]
POST    /_sim/config                               {historyRetentionSeconds (null = keep forever), tokenLifetimeSeconds,
                                                   notificationHistoryIdType: "number"|"string", seed,
                                                   concurrentRequestsPerUser, userQuotaUnitsPerMinute,
                                                   projectQuotaUnitsPerMinute (null = no cap), batchPartsConcurrent,
                                                   historyLabelIds, messageVisibilityDelaySeconds,
                                                   emptyHistoryPages} [configure]
POST    /_sim/mailboxes                            {emails: [...], historyId?} → {mailboxes: [{emailAddress, historyId}]}
                                                   (idempotent) [create_mailbox, create_mailboxes]
GET     /_sim/mailboxes/{email}                    historyId, messagesTotal, historyFloor, labels, watches (one per
                                                   project), watch (the latest) [mailbox, history_id]
POST    /_sim/mailboxes/{email}/labels             {name} → {id, name} (user label "Label_N") [create_label]
DELETE  /_sim/mailboxes/{email}/labels/{id}        delete a user label; it leaves its messages → {historyIds} [delete_label]
POST    /_sim/mailboxes/{email}/aliases            {aliases: [...]} → {emailAddress, aliases} [add_aliases]
POST    /_sim/mailboxes/{email}/messages/seed      {count (≤1,000,000), labelIds? (default INBOX)} → {historyId,
                                                   messagesTotal, historyFloor}: messages that predate any watch, no
                                                   history records, earlier history expires (100k in well under a
                                                   second) [seed_messages]
POST    /_sim/mailboxes/{email}/history/expire     {throughHistoryId} → {historyFloor} [expire_history]
POST    /_sim/messages                             {messages: [{emailAddress, labelIds?, threadId?, subject?, from?, to?,
                                                   body?, internalDate?, headers?} or {emailAddress, raw (RFC 822 source,
                                                   base64url), labelIds?, threadId?, internalDate?}]} → {messages:
                                                   [{emailAddress, id, threadId, historyId}]} [insert_message,
                                                   insert_raw_message, insert_messages]
POST    /_sim/mailboxes/{email}/drafts            {subject?, from?, to?, body?, headers?, threadId?} → {draftId, id, threadId,
                                                   historyId}: a new draft (a message with only DRAFT) [save_draft]
POST    /_sim/mailboxes/{email}/drafts/{draftId}  same body: its next version, as Gmail autosaves: a new message with
                                                   DRAFT added, the previous one deleted, same thread [save_draft]
POST    /_sim/mailboxes/{email}/drafts/{draftId}/send  → {id, threadId, labelIds, historyId}: a new message with SENT
                                                   added, the draft's deleted [send_draft]
POST    /_sim/messages/delete                      {messages: [{emailAddress, id}]} → {historyIds} [delete_message(s)]
POST    /_sim/messages/modify                      {changes: [{emailAddress, id, addLabelIds, removeLabelIds, oneRecord?}]}
                                                   → {historyIds} [modify_labels, add_labels, remove_labels, modify_labels_bulk]
POST    /_sim/service-accounts                     {projectId?, name?} → service-account JSON key (RSA, token_uri
                                                   = {url}/token) [create_service_account_key, which can also grant it]
POST    /_sim/domains/{domain}/delegations         {clientId, scopes? (default Gmail's four read scopes)}: domain-wide
                                                   delegation for that domain (replaces the client's grant) [grant_delegation]
GET     /_sim/domains/{domain}/delegations         {domain, delegations: {clientId: scopes}} [delegations]
DELETE  /_sim/domains/{domain}/delegations/{id}    take a grant back [revoke_delegation]
POST    /_sim/oauth-clients                        {projectId?} → {clientId, clientSecret, tokenUri} [create_oauth_client]
                                                   (clientId begins with the project's number, as Google's do)
POST    /_sim/oauth-clients/{clientId}/delete      {restore?}: delete (or restore) the client [delete_oauth_client]
POST    /_sim/refresh-tokens                       {clientId, emailAddress, scopes?} → {refreshToken} [issue_refresh_token]
POST    /_sim/users/{email}/revoke | /restore      revoke / restore every credential of a user [revoke_user, restore_user]
POST    /_sim/users/{email}/refusals               {kind}: a permanent refusal for the user (see above; token kinds
                                                   clockSkew, unauthorizedClient, adminPolicyEnforced,
                                                   policyEnforced) [refuse_user]
DELETE  /_sim/users/{email}/refusals               lift it [lift_refusal]
GET     /_sim/clock                                {now, nowMs, offsetSeconds} [now]
POST    /_sim/clock/advance                        {seconds} [advance_clock]
GET     /_sim/faults                               {rules, lockouts: {user: {code, reason, until, retryAfter}},
                                                   refusals: {user: kind}, notifications: {dropFraction,
                                                   delaySeconds, byMailbox: {user: {...}}}} [faults]
POST    /_sim/faults                               {kind: rateLimitExceeded|429 | userRateLimitExceeded|403 |
                                                   concurrentRequests | backendError|500, method
                                                   ("users.history.list" or "*"), user?, fraction?, count? (next N
                                                   matching calls), retryAfter? (lockout seconds, default 900)}
                                                   [inject_fault]
DELETE  /_sim/faults , /_sim/faults/{id}           clear all (lockouts too) / one [clear_faults, remove_fault]
GET     /_sim/latency                              {rules} [latency]
POST    /_sim/latency                              {method ("users.messages.list" or "*"), seconds, user?}: every
                                                   matching call (each page, each batch part) waits that much more,
                                                   holding its concurrency slot [add_latency]
DELETE  /_sim/latency                              clear [clear_latency]
POST    /_sim/notifications/faults                 {dropFraction, delaySeconds, emailAddress? (that mailbox only, overriding
                                                   the global setting)} [set_notification_faults]
DELETE  /_sim/mailboxes/{email}/notifications/faults  the mailbox follows the global setting again [clear_notification_faults]
POST    /_sim/mailboxes/{email}/watch/expire       {projectId?}: the watch lapses now, notifications stop [expire_watch]
POST    /_sim/mailboxes/{email}/watch/refusal      {refuse: bool}: every users.watch of the mailbox (renewals too)
                                                   answers 500 backendError [refuse_watch]
GET     /_sim/notifications?emailAddress=          {notifications: [{seq, emailAddress, historyId, topic, time, status}],
                                                   counts, pending}; status: queued, published, unpublished (no emulator),
                                                   failed, dropped_rate_limit, dropped_fault, pushed; a published one
                                                   has publishedAfterSeconds (queued behind others + the publish
                                                   call) [notifications, notification_counts]
POST    /_sim/notifications/flush                  {timeout} → {flushed}: wait for queued ones [flush_notifications]
GET     /_sim/counters                             {calls: {user: {method: n}}, methods, quotaUnits: {user: units},
                                                   totalCalls, totalQuotaUnits, batches: {requests, sizes: [parts
                                                   per batch request]}, peakConcurrentRequests: {user: n}} [counters]
POST    /_sim/counters/reset                       [reset_counters]
POST    /_sim/push-subscriptions                   {name, topic, pushConfig: {pushEndpoint, oidcToken?: {serviceAccountEmail,
                                                   audience?}}, messageRetentionDuration? ("604800s")} (Pub/Sub's
                                                   Subscription fields; replaces one of the same
                                                   name) [create_push_subscription]
GET     /_sim/push-subscriptions                   {subscriptions: [...]} [push_subscriptions]
POST    /_sim/topics/gmail-publisher               {topic, granted}: whether Gmail may publish to the topic [set_gmail_publisher]
GET     /_sim/topics/gmail-publisher               {unpublishable: [topics]}
GET     /_sim/oidc                                 {issuer, certsUri, jwksUri} of the push tokens' issuer [oidc]
======  =========================================  ==============================================================

Pub/Sub push without the emulator
---------------------------------
With no emulator configured, the simulator delivers each notification to the push subscriptions of
its topic itself (``push.py``): a POST in Pub/Sub's push format, with an ID token signed by the
simulator's own OIDC issuer (``iss`` is the simulator's URL; keys at ``/oauth2/v1/certs`` as
``{kid: x509 PEM}`` like Google's, ``/oauth2/v3/certs`` as JWKS, ``/.well-known/openid-configuration``).
Status codes 102/200/201/202/204 acknowledge; anything else is retried with exponential backoff
(0.5 s doubling to 60 s) for as long as the subscription retains messages (its
``messageRetentionDuration``, Pub/Sub's default 7 days, on the simulated clock), then the notification
is ``failed``. Acknowledged ones
are ``pushed``. While push subscriptions exist, ``watch`` needs its topic to have one (404 otherwise),
as Gmail needs the topic to exist.

Method names used by counters and fault rules: ``users.getProfile``, ``users.watch``, ``users.stop``,
``users.history.list``, ``users.messages.list``, ``users.messages.get``,
``users.messages.attachments.get``, ``users.labels.list``, ``users.labels.get``, ``users.settings.sendAs.list``.
"""

from mailwatch_devstack.gmail_sim.control import SimulatorControl, SimulatorControlError
from mailwatch_devstack.gmail_sim.server import GmailSimulator

__all__ = ["GmailSimulator", "SimulatorControl", "SimulatorControlError"]
