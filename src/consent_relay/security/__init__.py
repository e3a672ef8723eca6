"""What keeps webhooks safe, below both ``services`` and ``delivery``: Standard Webhooks
signing (``signing``), the SSRF guard on destinations (``targets``) and the opening of a
webhook's stored secrets (``secrets``). Pure of storage: these modules import nothing of
Consent Relay but ``errors`` and ``crypto``."""
