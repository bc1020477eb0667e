"""Everything that talks to Google's Gmail API: credentials, calls, error classification.

The rest of the service sees `GmailClient`, the typed values its calls return
(`history.HistoryPage` and its records, `domain.messages.Message`,
`client.WatchResult`, `client.Profile`, `domain.models.MessageLabels`) and
domain exceptions; Gmail's JSON is read here only
(tests/unit/layers/test_layers_gmail_border.py).
"""
