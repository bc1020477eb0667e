"""Everything that talks to Google's Gmail API: credentials, calls, error classification.

The rest of the service sees only `GmailClient` and domain exceptions.
"""
