"""The pure core: domain rules, template rendering and retry policy. No I/O in here."""
